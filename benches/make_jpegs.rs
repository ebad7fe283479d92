//! `make-jpegs DIR N WxH [CLASSES]`: writes `N` JPEGs of `W`x`H` into `DIR/class-K/` (the
//! bench folders of `benches/stream_folder.sh`), on every core; files already there are kept.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: make-jpegs DIR N WxH [CLASSES]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let n: usize = args[2].parse().expect("N is a number");
    let (w, h) = args[3].split_once('x').expect("WxH");
    let size: (u32, u32) = (w.parse().expect("W"), h.parse().expect("H"));
    let classes: usize = args.get(4).map_or(10, |c| c.parse().expect("CLASSES"));
    for c in 0..classes {
        std::fs::create_dir_all(dir.join(format!("class-{c}"))).expect("create the folder");
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    std::thread::scope(|s| {
        for t in 0..threads {
            let dir = &dir;
            s.spawn(move || {
                for i in (t..n).step_by(threads) {
                    let p = dir
                        .join(format!("class-{}", i % classes))
                        .join(format!("{i:06}.jpg"));
                    if !p.is_file() {
                        selfsup_benches::write_jpeg(&p, i, size);
                    }
                }
            });
        }
    });
}
