//! Writes the fuzz targets' seed corpus (see `tributary_sim::fuzzing`).
//!
//! `cargo run -p tributary-sim --example fuzz-corpus -- DIR` (default `fuzz/corpus`).

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_owned());
    match tributary_sim::fuzzing::write_corpus(std::path::Path::new(&dir)) {
        Ok(n) => println!("{n} seed inputs written under {dir}"),
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::exit(1);
        }
    }
}
