//! The `tapway` binary: see the library for everything.

use std::io::IsTerminal;

fn main() {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let code =
        tapway_cni::run(|k| std::env::var(k).ok(), &mut stdin.lock(), tty, &mut std::io::stdout().lock());
    std::process::exit(code);
}
