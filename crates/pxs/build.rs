//! The Windows build (x86_64-pc-windows-gnu with mingw-w64) links the C and C++ runtime pieces as
//! static archives, so that pxs.exe runs with no DLL beside it. Rust already links libgcc and
//! winpthread statically there; the rest is added here, at the end of the link:
//! - libstdc++ (openh264 is C++; `.cargo/config.toml` stops the cc crate from importing the DLL),
//! - libssp (libopus is compiled with stack protection: `__stack_chk_fail`, `__stack_chk_guard`),
//!   which needs advapi32 for its random canary,
//! - then the runtime libraries these call into, in one group: they refer to each other in a
//!   cycle (libgcc's thread support needs libmingw32, which needs libgcc), and a static archive
//!   outside a group only resolves what was asked for before it on the command line.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-windows-gnu") {
        for arg in [
            "-Wl,--start-group",
            "-l:libstdc++.a",
            "-l:libssp.a",
            "-ladvapi32",
            "-lmingw32",
            "-lmingwex",
            "-lmsvcrt",
            "-lgcc",
            "-lgcc_eh",
            "-l:libpthread.a",
            "-lkernel32",
            "-Wl,--end-group",
        ] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
