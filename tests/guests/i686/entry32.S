/* hello32: a 32-bit test guest entered only through PVH (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit protected mode,
 * paging off, EBX = hvm_start_info. It never leaves 32-bit mode. */
	.section .note.pvh, "a", @note
	.balign 4
	.long 2f - 1f           /* namesz */
	.long 4f - 3f           /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
1:	.asciz "Xen"
2:	.balign 4
3:	.long pvh_start32
4:	.balign 4

	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	movl $stack_top, %esp
	xorl %ebp, %ebp
	pushl %ebx              /* hello32_main(start_info) */
	call hello32_main
	movw $0x501, %dx        /* debug-exit: the VMM exits with AL */
	outb %al, %dx
1:	hlt
	jmp 1b

	.section .bss
	.balign 16
	.skip 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
