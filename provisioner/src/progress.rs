//! Progress lines for long runs, on stderr so `--output json` stays clean.

pub fn note(msg: &str) {
    eprintln!("{msg}");
}
