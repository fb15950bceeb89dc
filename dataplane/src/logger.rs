//! The data plane's one logger: its own lines and those of the libraries
//! it uses (aya logs through the `log` facade; without a logger installed
//! its messages were thrown away) go to standard error, where control's
//! own lines go, filtered by the level control runs with (`-v`, LOG_LEVEL).
//! Its own lines keep the format they always had,
//! `wirespeed-dataplane[PID]: message`; a library's name its module,
//! `wirespeed-dataplane[PID]: aya::programs::xdp: message`.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    prefix: String,
    level: LevelFilter,
}

/// The level for a `LOG_LEVEL` value as control reads it: debug (or
/// verbose), info, error (or silent); anything else is info.
pub fn level_from_name(name: &str) -> LevelFilter {
    match name {
        "debug" | "verbose" => LevelFilter::Debug,
        "error" | "silent" => LevelFilter::Error,
        _ => LevelFilter::Info,
    }
}

/// Installs the logger for this process, once (later calls change nothing).
pub fn init(level: LevelFilter) {
    let logger = Logger {
        prefix: format!("wirespeed-dataplane[{}]", std::process::id()),
        level,
    };
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level);
    }
}

impl Logger {
    fn line(&self, record: &Record<'_>) -> String {
        let target = record.target();
        if target == "dataplane" || target.starts_with("dataplane::") {
            format!("{}: {}\n", self.prefix, record.args())
        } else {
            format!("{}: {target}: {}\n", self.prefix, record.args())
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write per line, so lines of two threads do not interleave.
            let _ = std::io::stderr()
                .lock()
                .write_all(self.line(record).as_bytes());
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn logger(level: LevelFilter) -> Logger {
        Logger {
            prefix: "wirespeed-dataplane[42]".into(),
            level,
        }
    }

    fn line(l: &Logger, target: &str, msg: &str) -> String {
        l.line(
            &Record::builder()
                .target(target)
                .level(Level::Info)
                .args(format_args!("{msg}"))
                .build(),
        )
    }

    #[test]
    fn own_lines_keep_their_format_and_a_library_is_named() {
        let l = logger(LevelFilter::Info);
        assert_eq!(
            line(&l, "dataplane::process", "interface deleted; exiting"),
            "wirespeed-dataplane[42]: interface deleted; exiting\n"
        );
        assert_eq!(
            line(&l, "aya::programs::xdp", "attached"),
            "wirespeed-dataplane[42]: aya::programs::xdp: attached\n"
        );
        assert_eq!(
            line(&l, "dataplanex", "m"),
            "wirespeed-dataplane[42]: dataplanex: m\n"
        );
    }

    #[test]
    fn levels_follow_log_level() {
        let md = |level| Metadata::builder().level(level).target("aya").build();
        let info = logger(level_from_name("info"));
        assert!(info.enabled(&md(Level::Info)) && info.enabled(&md(Level::Error)));
        assert!(!info.enabled(&md(Level::Debug)));
        let debug = logger(level_from_name("debug"));
        assert!(debug.enabled(&md(Level::Debug)) && !debug.enabled(&md(Level::Trace)));
        assert_eq!(level_from_name("verbose"), LevelFilter::Debug);
        let error = logger(level_from_name("error"));
        assert!(error.enabled(&md(Level::Error)) && !error.enabled(&md(Level::Warn)));
        assert_eq!(level_from_name("silent"), LevelFilter::Error);
        assert_eq!(level_from_name(""), LevelFilter::Info);
        assert_eq!(level_from_name("nonsense"), LevelFilter::Info);
    }
}
