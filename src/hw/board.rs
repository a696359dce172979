//! Board profiles (`hw/fpga/boards/*.toml`): the resources `ltvx hw estimate` budgets against. Every
//! figure sits beside a `<field>_source` naming the public document it comes from, and a profile
//! lacking one is refused. The format is a flat subset of TOML (`key = 123`, `key = "text"`, `#`
//! comments), read by the small parser here rather than a TOML crate: ltvx keeps its dependencies
//! lean and these files need nothing more. Errors name the file and the line.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The repository's profiles, where `--board NAME` looks unless `$LTVX_BOARDS` names another
/// directory (an installed binary far from its checkout).
pub const BOARDS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hw/fpga/boards");

pub fn boards_dir() -> PathBuf {
    std::env::var_os("LTVX_BOARDS").map_or_else(|| PathBuf::from(BOARDS_DIR), PathBuf::from)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    pub file: PathBuf,
    pub name: String,
    pub vendor: String,
    pub part: String,
    pub dsp: u64,
    /// int8 multiplies one DSP block performs per cycle (two for a DSP48E2/DSP58 with a shared
    /// operand, two 18×19 multipliers in an Agilex block).
    pub int8_per_dsp: u64,
    /// DSP blocks of one requantization multiply (32-bit accumulator × 31-bit multiplier).
    pub requant_dsp: u64,
    pub luts: u64,
    /// The block RAM the estimate maps buffers to: BRAM36 (36 Kbit) or M20K (20 Kbit).
    pub ram_name: String,
    pub ram_blocks: u64,
    pub ram_block_bits: u64,
    /// UltraRAM (288 Kbit) where the part has it; 0 otherwise.
    pub uram_blocks: u64,
    pub uram_block_bits: u64,
    pub clock_mhz: f64,
}

/// `key = value` pairs with the line each came from.
struct Fields {
    file: PathBuf,
    pairs: Vec<(String, Value, usize)>,
}

enum Value {
    Int(u64),
    Str(String),
}

fn err(file: &Path, line: Option<usize>, reason: impl std::fmt::Display) -> Error {
    let origin = match line {
        Some(l) => format!("{}:{l}", file.display()),
        None => file.display().to_string(),
    };
    Error::Input(format!("board profile {origin}: {reason}"))
}

fn parse(file: &Path, text: &str) -> Result<Fields> {
    let mut pairs: Vec<(String, Value, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = line.split_once('=').ok_or_else(|| err(file, Some(n), "expected `key = value`"))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(file, Some(n), format!("invalid key {key:?}")));
        }
        let rest = rest.trim();
        let value = if let Some(s) = rest.strip_prefix('"') {
            let end = s.find('"').ok_or_else(|| err(file, Some(n), format!("{key}: unterminated string")))?;
            let after = s[end + 1..].trim();
            if !(after.is_empty() || after.starts_with('#')) {
                return Err(err(file, Some(n), format!("{key}: unexpected {after:?} after the string")));
            }
            Value::Str(s[..end].to_string())
        } else {
            let digits = rest.split('#').next().unwrap_or("").trim().replace('_', "");
            Value::Int(digits.parse().map_err(|_| {
                err(file, Some(n), format!("{key}: {rest:?} is neither a non-negative integer nor a \"string\""))
            })?)
        };
        if let Some((_, _, first)) = pairs.iter().find(|(k, _, _)| k == key) {
            return Err(err(file, Some(n), format!("{key} is already set on line {first}")));
        }
        pairs.push((key.to_string(), value, n));
    }
    Ok(Fields { file: file.to_path_buf(), pairs })
}

impl Fields {
    fn get(&self, key: &str) -> Result<(&Value, usize)> {
        self.pairs
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, n)| (v, *n))
            .ok_or_else(|| err(&self.file, None, format!("missing field `{key}`")))
    }

    fn text(&self, key: &str) -> Result<String> {
        match self.get(key)? {
            (Value::Str(s), _) => Ok(s.clone()),
            (Value::Int(_), n) => Err(err(&self.file, Some(n), format!("{key} must be a \"string\""))),
        }
    }

    /// A figure: a positive integer with its `<key>_source` beside it.
    fn figure(&self, key: &str) -> Result<u64> {
        let source = self.text(&format!("{key}_source"))?;
        match self.get(key)? {
            (_, n) if source.trim().is_empty() => Err(err(&self.file, Some(n), format!("{key}_source is empty"))),
            (Value::Int(v), _) => Ok(*v),
            (Value::Str(_), n) => Err(err(&self.file, Some(n), format!("{key} must be an integer"))),
        }
    }
}

impl Board {
    pub fn parse(file: &Path, text: &str) -> Result<Board> {
        let f = parse(file, text)?;
        let positive = |key: &str| -> Result<u64> {
            match f.figure(key)? {
                0 => Err(err(file, Some(f.get(key)?.1), format!("{key} must be positive"))),
                v => Ok(v),
            }
        };
        let (uram_blocks, uram_block_bits) = match f.get("uram_blocks") {
            Ok(_) => (f.figure("uram_blocks")?, positive("uram_block_bits")?),
            Err(_) => (0, 0),
        };
        Ok(Board {
            file: file.to_path_buf(),
            name: f.text("name")?,
            vendor: f.text("vendor")?,
            part: f.text("part")?,
            dsp: positive("dsp")?,
            int8_per_dsp: positive("int8_per_dsp")?,
            requant_dsp: positive("requant_dsp")?,
            luts: positive("luts")?,
            ram_name: f.text("ram_name")?,
            ram_blocks: positive("ram_blocks")?,
            ram_block_bits: positive("ram_block_bits")?,
            uram_blocks,
            uram_block_bits,
            clock_mhz: positive("clock_mhz")? as f64,
        })
    }

    pub fn open(file: &Path) -> Result<Board> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        Board::parse(file, &text)
    }

    /// `--board`: a file path, or the name of a profile in `dir` (`u55c` for `u55c.toml`).
    pub fn find(name: &str, dir: &Path) -> Result<Board> {
        let path = Path::new(name);
        if path.extension().is_some_and(|e| e == "toml") || path.components().count() > 1 {
            return Board::open(path);
        }
        let file = dir.join(format!("{name}.toml"));
        if file.exists() {
            return Board::open(&file);
        }
        let known = Board::names(dir).join(", ");
        Err(Error::Input(format!("no board profile {name:?} in {} (known: {known})", dir.display())))
    }

    /// The profile names in `dir`, sorted.
    pub fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.path().file_name()?.to_str()?.strip_suffix(".toml").map(str::to_string))
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_with_its_sources() {
        let names = Board::names(Path::new(BOARDS_DIR));
        assert_eq!(names, ["agilex7_agf014", "u250", "u55c"]);
        for n in names {
            let b = Board::find(&n, Path::new(BOARDS_DIR)).unwrap();
            assert!(b.dsp > 1000 && b.ram_blocks > 1000 && b.clock_mhz >= 100.0, "{b:?}");
        }
    }

    fn error(text: &str) -> String {
        Board::parse(Path::new("b.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let good = std::fs::read_to_string(Path::new(BOARDS_DIR).join("u55c.toml")).unwrap();
        let line = good.lines().position(|l| l.starts_with("dsp =")).unwrap() + 1;
        let e = error(&good.replace("dsp = 9_024", "dsp = lots"));
        assert!(e.contains(&format!("b.toml:{line}")) && e.contains("dsp"), "{e}");
        let e = error(&good.replace("dsp_source", "dsp_origin"));
        assert!(e.contains("b.toml") && e.contains("missing field `dsp_source`"), "{e}");
        assert!(error("name \"x\"\n").contains("b.toml:1"), "no `=`");
        assert!(error("# c\nname = \"x\nvendor").contains("b.toml:2"), "unterminated");
        assert!(error("a = 1\na = 2\n").contains("b.toml:2: a is already set on line 1"));
    }
}
