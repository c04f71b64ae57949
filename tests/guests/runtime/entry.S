/* Vireo test-guest runtime entry points.
 *   _start       Vireo 64-bit protocol: long mode, RDI = vCPU index, RSI = boot page.
 *   pvh_start32  PVH entry (32-bit protected mode, paging off, EBX = hvm_start_info): builds identity page
 *                tables for the low 4 GiB, enters long mode and continues on vCPU 0's stack. */
#define GUEST_MAX_CPUS 64
#define GUEST_STACK_SIZE 16384

/* ELF notes: Xen PHYS32_ENTRY (type 18, PVH) and the Vireo test-guest marker (type 1). */
	.section .note.pvh, "a", @note
	.balign 4
	.long 4f - 3f           /* namesz */
	.long 6f - 5f           /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
3:	.asciz "Xen"
4:	.balign 4
5:	.long pvh_start32
6:	.balign 4

#ifndef VIREO_NO_VIREO_NOTE
	.section .note.vireo, "a", @note
	.balign 4
	.long 4f - 3f
	.long 6f - 5f
	.long 1                 /* VIREO_ELFNOTE_TEST_GUEST */
3:	.asciz "Vireo"
4:	.balign 4
5:	.long 1                 /* protocol version */
6:	.balign 4
#endif

	.section .text.entry, "ax"
	.code64
	.globl _start
_start:
	cli
	cmp $GUEST_MAX_CPUS, %rdi
	jae park
	mov %rdi, %rax
	inc %rax
	imul $GUEST_STACK_SIZE, %rax
	lea guest_stacks(%rip), %rsp
	add %rax, %rsp
	xor %ebp, %ebp
	/* rdi = cpu, rsi = boot page */
	call guest_entry64
park:
	cli
	hlt
	jmp park

	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	mov %ebx, %esi
	lgdt rt_gdt_desc
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	/* page directories: 2048 x 2 MiB pages = 4 GiB, P|RW|U/S|PS */
	mov $rt_pd, %edi
	xor %ecx, %ecx
1:	mov %ecx, %eax
	shl $21, %eax
	or $0x87, %eax
	mov %eax, (%edi,%ecx,8)
	movl $0, 4(%edi,%ecx,8)
	inc %ecx
	cmp $2048, %ecx
	jb 1b
	/* PDPT: 4 entries */
	mov $rt_pdpt, %edi
	xor %ecx, %ecx
2:	mov %ecx, %eax
	shl $12, %eax
	add $rt_pd, %eax
	or $0x7, %eax
	mov %eax, (%edi,%ecx,8)
	movl $0, 4(%edi,%ecx,8)
	inc %ecx
	cmp $4, %ecx
	jb 2b
	mov $rt_pml4, %edi
	mov $rt_pdpt, %eax
	or $0x7, %eax
	mov %eax, (%edi)
	movl $0, 4(%edi)
	/* CR4 = PAE|OSFXSR|OSXMMEXCPT, CR3, EFER.LME|SCE, CR0 = PE|MP|ET|NE|WP|PG */
	mov $0x620, %eax
	mov %eax, %cr4
	mov $rt_pml4, %eax
	mov %eax, %cr3
	mov $0xc0000080, %ecx
	rdmsr
	or $0x101, %eax
	wrmsr
	mov $0x80010033, %eax
	mov %eax, %cr0
	ljmp $0x10, $pvh_start64

	.code64
pvh_start64:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	lea guest_stacks(%rip), %rsp
	add $GUEST_STACK_SIZE, %rsp
	xor %ebp, %ebp
	mov %esi, %edi          /* zero-extended hvm_start_info address */
	call guest_entry_pvh
	jmp park

/* AP start-up trampoline for the PVH path (the Vireo protocol starts every vCPU itself). The runtime copies
 * [ap_tramp_start, ap_tramp_end) to AP_TRAMP_ADDR and sends INIT-SIPI-SIPI with vector AP_TRAMP_ADDR >> 12.
 * The AP enters in real mode at CS = AP_TRAMP_ADDR >> 4, IP = 0. */
#define AP_TRAMP_ADDR 0x8000
	.section .rodata
	.globl ap_tramp_start, ap_tramp_end
	.code16
ap_tramp_start:
	cli
	cld
	mov %cs, %ax
	mov %ax, %ds
	lgdtl (ap_tramp_gdt_desc - ap_tramp_start)
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $0x08, $(AP_TRAMP_ADDR + (ap_tramp32 - ap_tramp_start))
	.code32
ap_tramp32:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov $0x620, %eax
	mov %eax, %cr4
	mov $rt_pml4, %eax
	mov %eax, %cr3
	mov $0xc0000080, %ecx
	rdmsr
	or $0x101, %eax
	wrmsr
	mov $0x80010033, %eax
	mov %eax, %cr0
	ljmp $0x10, $ap_start64
	.balign 8
ap_tramp_gdt_desc:
	.word rt_gdt_end - rt_gdt - 1
	.long rt_gdt
ap_tramp_end:

	.text
	.code64
ap_start64:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $0xfee00020, %eax
	mov (%rax), %eax
	shr $24, %eax
	lea g_apic_to_cpu(%rip), %rdx
	movzbl (%rdx,%rax), %edi
	cmp $GUEST_MAX_CPUS, %edi
	jae park
	mov %rdi, %rax
	inc %rax
	imul $GUEST_STACK_SIZE, %rax
	lea guest_stacks(%rip), %rsp
	add %rax, %rsp
	xor %ebp, %ebp
	xor %esi, %esi
	call guest_entry64
	jmp park

/* Interrupt stubs: push a dummy error code where the CPU pushes none, then the vector. */
	.text
	.balign 16
	.globl irq_stubs
irq_stubs:
	vec = 0
	.rept 256
	.balign 16
	.if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp irq_common
	vec = vec + 1
	.endr

irq_common:
	push %r11
	push %r10
	push %r9
	push %r8
	push %rdi
	push %rsi
	push %rdx
	push %rcx
	push %rax
	mov %rsp, %rdi
	cld
	call irq_dispatch
	pop %rax
	pop %rcx
	pop %rdx
	pop %rsi
	pop %rdi
	pop %r8
	pop %r9
	pop %r10
	pop %r11
	add $16, %rsp
	iretq

	.data
	.balign 16
rt_gdt:
	.quad 0
	.quad 0x00cf9b000000ffff  /* 0x08 CS32 */
	.quad 0x00af9b000000ffff  /* 0x10 CS64 */
	.quad 0x00cf93000000ffff  /* 0x18 DS */
rt_gdt_end:
	.balign 4
rt_gdt_desc:
	.word rt_gdt_end - rt_gdt - 1
	.long rt_gdt

	.bss
	.balign 4096
rt_pml4: .skip 4096
rt_pdpt: .skip 4096
rt_pd:   .skip 4 * 4096
	.balign 64
	.globl guest_stacks
guest_stacks: .skip GUEST_MAX_CPUS * GUEST_STACK_SIZE

	.section .note.GNU-stack, "", @progbits
