//! The Windows calls the session server needs and neither the standard library nor process-wrap
//! offers: the graceful stop of a session's process tree, and a console for the service.
//!
//! Windows has no SIGTERM. What an application listens to depends on its kind:
//! - a *console* application (`pxs streamer`, a UE dedicated server, other console programs)
//!   gets `CTRL_BREAK_EVENT`. Each session's application is started with
//!   `CREATE_NEW_PROCESS_GROUP`, so the event reaches that session's processes only (and a
//!   Ctrl-C typed into the session server's own console reaches none of them);
//! - a *GUI* application (a packaged UE game, even with `-log`, which opens a console of its own)
//!   is not on our console; it gets `WM_CLOSE` on each of its top-level windows, which is what
//!   closing the window does (UE then exits normally).
//!
//! Both are sent; whatever the application ignores, the job object is terminated once
//! `node.kill_grace` has passed.
//!
//! This is the only module of pxs with `unsafe` code: each block is one Win32 call with the
//! invariant it relies on written beside it.
#![allow(unsafe_code)]

use std::collections::HashSet;
use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HWND, INVALID_HANDLE_VALUE, LPARAM};
use windows_sys::Win32::System::Console::{
    AllocConsole, CTRL_BREAK_EVENT, GenerateConsoleCtrlEvent,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    EnumWindows, GetWindowThreadProcessId, PostMessageW, WM_CLOSE,
};

/// The creation flag that makes a session's application the root of its own console process
/// group (`CTRL_BREAK_EVENT` can then be sent to it alone).
pub const CREATE_NEW_PROCESS_GROUP: u32 =
    windows_sys::Win32::System::Threading::CREATE_NEW_PROCESS_GROUP;

/// What [`request_stop`] could deliver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopRequest {
    /// `CTRL_BREAK_EVENT` was accepted for the leader's process group.
    pub ctrl_break: bool,
    /// Why it was not (the system's error), when it was not.
    pub ctrl_break_error: Option<String>,
    /// Top-level windows of the tree that were sent `WM_CLOSE`.
    pub windows_closed: usize,
}

/// Asks the process tree rooted at `leader` to end by itself: `CTRL_BREAK_EVENT` to its console
/// process group and `WM_CLOSE` to every top-level window of the leader and its descendants.
pub fn request_stop(leader: u32) -> StopRequest {
    // SAFETY: plain call with two integers; a group id that is not ours or not on our console
    // makes it fail, which is reported, never undefined.
    let ctrl_break = unsafe { GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, leader) } != 0;
    let ctrl_break_error = (!ctrl_break).then(|| std::io::Error::last_os_error().to_string());
    let tree = descendants(leader);
    let windows = windows_of(&tree);
    let mut windows_closed = 0;
    for hwnd in windows {
        // SAFETY: posting to a window that has gone since EnumWindows fails harmlessly.
        if unsafe { PostMessageW(hwnd as HWND, WM_CLOSE, 0, 0) } != 0 {
            windows_closed += 1;
        }
    }
    StopRequest {
        ctrl_break,
        ctrl_break_error,
        windows_closed,
    }
}

/// `leader` and every process whose parent chain leads to it, from one snapshot of the process
/// table. (Windows reuses process ids; a tree is taken from a live leader at the moment of the
/// snapshot, which is what a stop request needs.)
pub fn descendants(leader: u32) -> HashSet<u32> {
    crate::process::tree_of(leader, &process_table(), created)
}

/// When process `pid` was created (FILETIME ticks), if it can be opened.
fn created(pid: u32) -> Option<u64> {
    // SAFETY: plain call; a null handle (no such process, no access) is checked.
    let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if handle.is_null() {
        return None;
    }
    let mut times = [FILETIME::default(); 4];
    let [creation, exit, kernel, user] = &mut times;
    // SAFETY: `handle` is an open process handle with query rights; the four pointers are
    // writable FILETIMEs.
    let ok = unsafe { GetProcessTimes(handle, creation, exit, kernel, user) } != 0;
    // SAFETY: opened above, closed once.
    unsafe { CloseHandle(handle) };
    ok.then(|| (u64::from(creation.dwHighDateTime) << 32) | u64::from(creation.dwLowDateTime))
}

/// `(process id, parent process id)` of every process.
fn process_table() -> Vec<(u32, u32)> {
    // SAFETY: plain call; the handle is checked and closed below.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snapshot == INVALID_HANDLE_VALUE || snapshot.is_null() {
        tracing::warn!(
            e = %std::io::Error::last_os_error(),
            "cannot list the processes: WM_CLOSE reaches the session's first process only"
        );
        return Vec::new();
    }
    let mut table = Vec::new();
    let mut entry = PROCESSENTRY32W {
        dwSize: size_of::<PROCESSENTRY32W>() as u32,
        ..Default::default()
    };
    // SAFETY: `snapshot` is a valid snapshot handle and `entry` a writable PROCESSENTRY32W whose
    // dwSize is set, as both calls require.
    let mut more = unsafe { Process32FirstW(snapshot, &mut entry) } != 0;
    while more {
        table.push((entry.th32ProcessID, entry.th32ParentProcessID));
        // SAFETY: as above.
        more = unsafe { Process32NextW(snapshot, &mut entry) } != 0;
    }
    // SAFETY: the handle came from CreateToolhelp32Snapshot and is closed once.
    unsafe { CloseHandle(snapshot) };
    table
}

/// The top-level windows owned by any of `pids`.
fn windows_of(pids: &HashSet<u32>) -> Vec<usize> {
    struct Search<'a> {
        pids: &'a HashSet<u32>,
        found: Vec<usize>,
    }
    unsafe extern "system" fn visit(hwnd: HWND, param: LPARAM) -> windows_sys::core::BOOL {
        // SAFETY: `param` is the address of the `Search` below, alive for the whole EnumWindows
        // call, which calls us synchronously on this thread only.
        let search = unsafe { &mut *(param as *mut Search<'_>) };
        let mut pid = 0u32;
        // SAFETY: `hwnd` comes from EnumWindows; `pid` is a writable u32.
        unsafe { GetWindowThreadProcessId(hwnd, &mut pid) };
        if search.pids.contains(&pid) {
            search.found.push(hwnd as usize);
        }
        1 // go on
    }
    let mut search = Search {
        pids,
        found: Vec::new(),
    };
    // SAFETY: `visit` matches WNDENUMPROC and `search` outlives the call (see `visit`).
    unsafe { EnumWindows(Some(visit), &mut search as *mut Search<'_> as LPARAM) };
    search.found
}

/// Gives this process a console if it has none (a Windows service has none), so that the
/// console applications it starts share it and `CTRL_BREAK_EVENT` can reach them. The console of
/// a service is shown to nobody. Returns whether a console was made (false: one was there).
pub fn ensure_console() -> Result<bool, std::io::Error> {
    // SAFETY: plain call without arguments; it fails, harmlessly, when a console is attached.
    if unsafe { AllocConsole() } != 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    // ERROR_ACCESS_DENIED: this process has a console already.
    if e.raw_os_error() == Some(5) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Connects this process to the service manager as the service `name` and blocks until the
/// service has stopped; the service manager calls [`crate::service::service_main`] meanwhile.
pub fn dispatch_service(name: &str) -> windows_service::Result<()> {
    windows_service::service_dispatcher::start(name, ffi_service_main)
}

// The entry point the service manager calls (the macro's expansion reads its raw arguments,
// hence this module).
use crate::service::service_main;
windows_service::define_windows_service!(ffi_service_main, service_main);
