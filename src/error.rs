//! Error types shared across supd.
//!
//! Owns: errors that carry enough context (unit, file:line, path) to be acted
//! on, and whose Display says what to do. Must never: lose the location of a
//! problem, or turn a bad input into a silent default.

use std::fmt;
use std::path::PathBuf;

/// A problem with a unit file or the unit set. One file may yield many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    /// The file the problem is in (or the units directory for set-wide errors).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl UnitError {
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> UnitError {
        UnitError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, line: usize, column: usize) -> UnitError {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> UnitError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  help: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnitError {}
