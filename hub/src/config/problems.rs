//! What is wrong with a configuration, each problem with its file and line, and the collector
//! that lets `hub config check` report every problem at once instead of the first.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// One or more problems, each with file and line.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
}

fn problems_text(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n")
}

/// One configuration problem, located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in (the config or a schema it names).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// Lowercase, without personal data.
    pub message: String,
}

impl ConfigError {
    /// Merges the problems of two checks into one error (or none).
    pub fn merge(a: Result<(), ConfigError>, b: Result<(), ConfigError>) -> Result<(), ConfigError> {
        match (a, b) {
            (Ok(()), other) | (other, Ok(())) => other,
            (Err(ConfigError::Invalid(mut x)), Err(ConfigError::Invalid(y))) => {
                x.extend(y);
                x.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
                Err(ConfigError::Invalid(x))
            }
            (Err(e), _) => Err(e),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Collects problems against one source text, turning byte spans into line numbers.
pub struct Problems<'a> {
    file: &'a Path,
    source: &'a str,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    /// Starts an empty list for `file` whose text is `source`.
    pub fn new(file: &'a Path, source: &'a str) -> Self {
        Self { file, source, list: Vec::new() }
    }

    /// Adds a problem at a byte span of the source.
    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = line_of(self.source, span.start);
        self.list.push(Problem { file: self.file.to_path_buf(), line, message: message.into() });
    }

    /// Adds a problem located in another file (a schema).
    pub fn in_file(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.list.push(Problem { file: file.to_path_buf(), line, message: message.into() });
    }

    /// Ends collection: `Ok` when nothing was found.
    pub fn finish(mut self) -> Result<(), ConfigError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            self.list.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Err(ConfigError::Invalid(self.list))
        }
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}
