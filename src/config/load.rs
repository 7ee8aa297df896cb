//! Loading a configuration text: the four steps the parent module lists (parse, presets,
//! rules, `ca_file`), each error placed at the line of its key in the text.

use std::path::Path;

use super::locate::{self, Step};
use super::problem::Problem;
use super::{presets, redact, ManagerConfig};
use crate::error::{ConfigError, ConfigLocation};

/// The two text formats.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Toml,
    Json,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        }
    }
}

/// A configuration text being loaded: what errors need to name their place.
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) format: Format,
    pub(super) file: Option<&'a Path>,
}

impl Source<'_> {
    pub(super) fn load(&self) -> Result<ManagerConfig, ConfigError> {
        let mut config: ManagerConfig = self.parse()?;
        if config.service.iter().any(|s| s.preset.is_some()) {
            let raw: serde_json::Value = self.parse()?;
            presets::apply(&raw, &mut config.service).map_err(|p| self.place(p))?;
        }
        if let Some(dir) = self.file.and_then(Path::parent) {
            for service in &mut config.service {
                if let Some(ca) = service.ca_file.as_mut() {
                    if !ca.is_empty() && Path::new(ca.as_str()).is_relative() {
                        *ca = dir.join(ca.as_str()).display().to_string();
                    }
                }
            }
        }
        config.problem().map_err(|p| self.place(p))?;
        for (i, service) in config.service.iter().enumerate() {
            let Some(ca) = &service.ca_file else { continue };
            if let Err(e) = std::fs::metadata(ca).and_then(|m| {
                if m.is_file() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not a file"))
                }
            }) {
                return Err(self.place(Problem {
                    service: Some(i),
                    path: vec!["ca_file".into()],
                    error: Box::new(ConfigError::invalid(
                        &service.name,
                        "ca_file",
                        &format!("'{ca}' cannot be read: {e}"),
                    )),
                }));
            }
        }
        Ok(config)
    }

    /// The text parsed into `T`; a parse error carries its place and key, and no value from
    /// the text ([`redact`]).
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        // The parser's words (never `toml`'s `Display`, which quotes the source line), and
        // the byte offset of the error.
        let (words, offset) = match self.format {
            Format::Toml => match toml::from_str(self.text) {
                Ok(v) => return Ok(v),
                Err(e) => (e.message().to_string(), e.span().map(|s| s.start)),
            },
            Format::Json => match serde_json::from_str(self.text) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let words = e.to_string();
                    let words = match e.line() {
                        0 => words,
                        line => {
                            let suffix = format!(" at line {line} column {}", e.column());
                            words.strip_suffix(&suffix).unwrap_or(&words).to_string()
                        }
                    };
                    let offset = (e.line() > 0)
                        .then(|| locate::json_offset_at(self.text, e.line(), e.column()));
                    (words, offset)
                }
            },
        };
        let mut message = redact::parser_message(&words);
        let key = offset.and_then(|offset| match self.format {
            Format::Toml => locate::toml_key_at(self.text, offset),
            Format::Json => locate::json_key_at(self.text, offset),
        });
        if let Some(key) = key {
            message = format!("key `{key}`: {message}");
        }
        let at = match offset {
            Some(offset) => Some(self.location(offset)),
            None => self.file.map(|_| ConfigLocation {
                file: self.file_name(),
                line: 1,
                column: 1,
            }),
        };
        Err(ConfigError::Parse {
            format: self.format.name(),
            message,
            at,
        })
    }

    /// The problem's error, placed at its key (or the nearest enclosing table present).
    fn place(&self, problem: Problem) -> ConfigError {
        let mut steps = Vec::with_capacity(problem.path.len() + 2);
        if let Some(i) = problem.service {
            steps.push(Step::Key("service"));
            steps.push(Step::Index(i));
        }
        steps.extend(problem.path.iter().map(|k| Step::Key(k)));
        let offset = match self.format {
            Format::Toml => locate::toml_offset(self.text, &steps),
            Format::Json => locate::json_offset(self.text, &steps),
        };
        match offset {
            Some(offset) => (*problem.error).at(self.location(offset)),
            None => *problem.error,
        }
    }

    fn location(&self, offset: usize) -> ConfigLocation {
        let (line, column) = locate::line_column(self.text, offset);
        ConfigLocation {
            file: self.file_name(),
            line,
            column,
        }
    }

    fn file_name(&self) -> Option<String> {
        self.file.map(|f| f.display().to_string())
    }
}
