//! `dahdi-sim`: a FUSE daemon that serves a simulated DAHDI device tree (`ctl`, `channel`,
//! `pseudo`, `timer`, `chan/SSS/CCC`) so the real DAHDI syscall path can run without hardware.

fn main() {
    eprintln!("dahdi-sim: not built yet");
    std::process::exit(2);
}
