/* A minimal Vireo test guest (ELF64 without a PVH note: entered in long mode at _start, see
 * docs/test-guests.md) for debug-exit propagation: prints "exit-guest: vCPU <n>" on COM1 from vCPU 0 and writes
 * 0x5a to the debug-exit port 0x501, so vireo-vmm must exit with status 90. Other vCPUs halt. */
	.code64
	.text
	.globl _start
_start:
	test %rdi, %rdi
	jnz park
	lea msg(%rip), %rsi
	mov $0x3f8, %dx
1:	lodsb
	test %al, %al
	jz 2f
	outb %al, %dx
	jmp 1b
2:	mov $0x501, %dx
	mov $0x5a, %al
	outb %al, %dx
park:
	cli
	hlt
	jmp park

	.section .rodata
msg:	.asciz "exit-guest: vCPU 0\n"
