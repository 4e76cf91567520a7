/*
 * The `_start` of a wasi:cli command guest, replacing Debian's wasi-libc
 * crt1-command.o (wasi-libc 2022), whose `_start` does not run constructors
 * itself. With that one, wasm-ld either wraps every export (cabi_realloc
 * too) in constructor calls, so wasi-libc's preopen table is filled inside
 * the host's realloc callback and the guest traps ("cannot leave component
 * instance"), or, when some object references __wasm_call_ctors, nothing
 * runs the constructors and every std::fs call fails with ENOTCAPABLE.
 * This is what current wasi-libc's crt1-command does: constructors once,
 * then main, then destructors. Built by scripts/build-guests.sh.
 */
extern void __wasm_call_ctors(void);
extern void __wasm_call_dtors(void);
extern int __main_void(void);
extern _Noreturn void _Exit(int);

__attribute__((export_name("_start")))
void _start(void) {
    static volatile int started = 0;
    if (started != 0) __builtin_trap();
    started = 1;
    __wasm_call_ctors();
    int r = __main_void();
    __wasm_call_dtors();
    if (r != 0) _Exit(r);
}
