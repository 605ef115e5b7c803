//! How the CLI talks to a person: coloured status lines when the stream is a terminal (and
//! `NO_COLOR` is not set), plain text otherwise, so scripts and pipes never see escape codes.
//! Scripts should use `--json` anyway.

use std::io::IsTerminal;

/// Colours for one stream, decided once.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn stdout() -> Paint {
        Paint::when(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Paint {
        Paint::when(std::io::stderr().is_terminal())
    }

    fn when(terminal: bool) -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Paint {
            on: terminal && !no_color && !dumb,
        }
    }

    fn wrap(self, code: &str, text: &str) -> String {
        match self.on {
            true => format!("\x1b[{code}m{text}\x1b[0m"),
            false => text.to_owned(),
        }
    }

    pub fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }

    pub fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }

    pub fn yellow(self, text: &str) -> String {
        self.wrap("33", text)
    }

    pub fn cyan(self, text: &str) -> String {
        self.wrap("36", text)
    }

    pub fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }

    pub fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }
}

/// `error: ...` on stderr.
pub fn error(message: &str) {
    eprintln!("{} {message}", Paint::stderr().red("error:"));
}

/// `warning: ...` on stderr.
pub fn warning(message: &str) {
    eprintln!("{} {message}", Paint::stderr().yellow("warning:"));
}

/// A success line on stdout (`✓ ...` on a terminal).
pub fn success(message: &str) {
    let paint = Paint::stdout();
    match paint.on {
        true => println!("{} {message}", paint.green("✓")),
        false => println!("{message}"),
    }
}
