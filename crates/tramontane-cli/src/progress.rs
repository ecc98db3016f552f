//! A progress bar on stderr for long operations (only when stderr is a terminal
//! or when asked; otherwise a line per 10%).

use std::io::{IsTerminal, Write};

pub struct Bar {
    label: &'static str,
    quiet: bool,
    tty: bool,
    last_decile: u64,
    shown: bool,
}

impl Bar {
    pub fn new(label: &'static str, quiet: bool) -> Self {
        Bar { label, quiet, tty: std::io::stderr().is_terminal(), last_decile: u64::MAX, shown: false }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if self.quiet || total == 0 {
            return;
        }
        let pct = done * 100 / total;
        let mb = |b: u64| b as f64 / 1e6;
        if self.tty {
            let width = 30;
            let fill = (pct as usize * width / 100).min(width);
            eprint!(
                "\r{} [{}{}] {:5.1}/{:.1} MB",
                self.label,
                "#".repeat(fill),
                " ".repeat(width - fill),
                mb(done),
                mb(total)
            );
            let _ = std::io::stderr().flush();
            self.shown = true;
        } else if pct / 10 != self.last_decile {
            self.last_decile = pct / 10;
            eprintln!("{} {:3}% ({:.1}/{:.1} MB)", self.label, pct, mb(done), mb(total));
        }
    }

    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}
