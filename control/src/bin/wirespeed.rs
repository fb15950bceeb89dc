//! `wirespeed IFACE`: the control process (work in progress: see issue 3).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--version") {
        println!("wirespeed {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    eprintln!("wirespeed: the tunnel daemon is not implemented yet");
    std::process::exit(1);
}
