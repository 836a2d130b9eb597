//! A test application that starts a process tree, for the session server's tests:
//! `pxs-test-tree <program> <args...>` runs `<program> <args...>` (e.g. `pxs streamer ...`) as a
//! child, plus a second child of its own that ignores SIGTERM, then waits for the first child
//! and exits with its code. Never a shell.
//! `pxs-test-tree --stubborn` is that second child: it sleeps forever, ignoring SIGTERM.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--stubborn") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            #[cfg(unix)]
            {
                // Handling SIGTERM means it no longer ends the process.
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("signal handler");
                loop {
                    term.recv().await;
                    println!("{{\"event\":\"sigterm_ignored\"}}");
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await;
        });
        return;
    }
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: pxs-test-tree <program> <args...>");
        std::process::exit(2);
    };
    let me = std::env::current_exe().expect("own path");
    let stubborn = std::process::Command::new(me)
        .arg("--stubborn")
        .spawn()
        .expect("stubborn child");
    let mut main = std::process::Command::new(program)
        .args(rest)
        .spawn()
        .expect("main child");
    println!(
        "{{\"event\":\"tree\",\"leader\":{},\"main\":{},\"stubborn\":{}}}",
        std::process::id(),
        main.id(),
        stubborn.id()
    );
    let status = main.wait().expect("wait");
    std::process::exit(status.code().unwrap_or(1));
}
