// tests/emulator/fiber.hpp - the emulator's threads are fibers: user-space stacks that one OS
// thread switches between. A suspended fiber's context is its stack pointer; its callee-saved
// registers and floating-point control words sit on its own stack.
//
// On x86-64 a switch is a dozen instructions. Elsewhere it falls back to swapcontext, which also
// saves the signal mask with a system call on every switch (the emulator makes millions).
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define ANSAN_EMULATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ANSAN_EMULATOR_ASAN 1
#endif
#endif
#if defined(ANSAN_EMULATOR_ASAN)
// Callers announce each switch (__sanitizer_start/finish_switch_fiber) so ASan tracks the right
// stack; a reused stack is unpoisoned before a fiber starts on it.
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace ansan::emulator::detail {

#if defined(__x86_64__)

struct FiberContext {
  void* stack_pointer = nullptr;
};

extern "C" void ansan_emulator_switch_fiber(void** save_stack_pointer, void* load_stack_pointer);

// Pushes the callee-saved registers, MXCSR and the x87 control word, saves the stack pointer,
// loads the other fiber's and pops its registers: `ret` resumes it where it switched out.
// Weak: one definition per program, whichever translation unit includes this.
__asm__(
    ".pushsection .text\n"
    ".weak ansan_emulator_switch_fiber\n"
    ".type ansan_emulator_switch_fiber, @function\n"
    "ansan_emulator_switch_fiber:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $8, %rsp\n"
    "  stmxcsr (%rsp)\n"
    "  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n"
    "  fldcw 4(%rsp)\n"
    "  addq $8, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size ansan_emulator_switch_fiber, .-ansan_emulator_switch_fiber\n"
    ".popsection\n");

// A fresh fiber whose first switch-in calls entry(), which must never return (it switches out
// for the last time instead). The stack is laid out as if it had switched out: the control
// words, six zero registers, then entry as the return address, 16-byte aligned the way a call
// leaves it.
inline void start_fiber(FiberContext& context, char* stack, std::size_t bytes, void (*entry)()) {
#if defined(ANSAN_EMULATOR_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(stack, bytes);  // the redzones of the last fiber that ran here
#endif
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t(15);
  auto* slot = reinterpret_cast<std::uint64_t*>(top);
  *--slot = 0;                                          // entry's own return address: none
  *--slot = reinterpret_cast<std::uint64_t>(entry);     // where the first `ret` goes
  for (int i = 0; i < 6; ++i) *--slot = 0;              // rbp, rbx, r12-r15
  *--slot = 0x1F80ull | (std::uint64_t(0x037F) << 32);  // MXCSR and x87 control word defaults
  context.stack_pointer = slot;
}

inline void switch_fiber(FiberContext& from, FiberContext& to) {
  ansan_emulator_switch_fiber(&from.stack_pointer, to.stack_pointer);
}

#else

struct FiberContext {
  ucontext_t context{};
};

inline void start_fiber(FiberContext& fiber, char* stack, std::size_t bytes, void (*entry)()) {
#if defined(ANSAN_EMULATOR_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(stack, bytes);
#endif
  getcontext(&fiber.context);
  fiber.context.uc_stack.ss_sp = stack;
  fiber.context.uc_stack.ss_size = bytes;
  fiber.context.uc_link = nullptr;
  makecontext(&fiber.context, entry, 0);
}

inline void switch_fiber(FiberContext& from, FiberContext& to) {
  swapcontext(&from.context, &to.context);
}

#endif

}  // namespace ansan::emulator::detail
