//! The `tapway-ipam` binary: an IPAM plugin whose addresses come from tapwayd
//! (see `tapway_cni::tapway_ipam::plugin`).

use std::io::IsTerminal;

use tapway_cni::tapway_ipam::plugin;

fn main() {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let code = tapway_cni::run_plugin(
        plugin::about,
        plugin::dispatch,
        |k| std::env::var(k).ok(),
        &mut stdin.lock(),
        tty,
        &mut std::io::stdout().lock(),
    );
    std::process::exit(code);
}
