//! Reuse factors: for each layer, the number of cycles one multiplier array is reused per output
//! vector (`--reuse-factor N` for every layer, `--layer-reuse NAME=N,…` for named ones). A factor
//! trades multipliers for cycles layer by layer, so a slow wide layer can keep its multipliers while
//! a cheap one gives them up. Checked against the network when it is built ([`Reuse::resolve`]), where
//! the layer names are known: a typo or a 0 is refused by name rather than silently ignored.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reuse {
    /// Every layer not named in `layers`, capped at each layer's outputs.
    pub all: usize,
    /// Layers with a factor of their own, as given.
    pub layers: Vec<(String, usize)>,
}

impl Reuse {
    /// The same factor for every layer.
    pub fn uniform(all: usize) -> Reuse {
        Reuse { all, layers: Vec::new() }
    }

    /// The same per-layer factors around another default (what the fit hint searches over).
    pub fn with_all(&self, all: usize) -> Reuse {
        Reuse { all, layers: self.layers.clone() }
    }

    /// Each layer's factor, for `layers` given as (name, outputs) in order: its own where named,
    /// else `all` capped at its outputs. Refused: a 0, a name given twice, a name of no layer, or a
    /// layer's own factor above its outputs (a group would be empty; capping it silently would hide a
    /// mistyped number).
    pub fn resolve(&self, layers: &[(&str, usize)]) -> Result<Vec<usize>> {
        let refuse = |why: String| Err(Error::Input(why));
        if self.all == 0 {
            return refuse("--reuse-factor must be at least 1".into());
        }
        for (i, (name, r)) in self.layers.iter().enumerate() {
            if *r == 0 {
                return refuse(format!("--layer-reuse {name}=0: a reuse factor must be at least 1"));
            }
            if self.layers[..i].iter().any(|(n, _)| n == name) {
                return refuse(format!("--layer-reuse names {name} twice"));
            }
            let Some((_, outputs)) = layers.iter().find(|(n, _)| n == name) else {
                let known = layers.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
                return refuse(format!("--layer-reuse names no layer {name:?}; the layers are {known}"));
            };
            if r > outputs {
                let plural = if *outputs == 1 { "" } else { "s" };
                return refuse(format!(
                    "--layer-reuse {name}={r}: {name} has {outputs} output{plural}, so its reuse factor is at most {outputs}"
                ));
            }
        }
        Ok(layers
            .iter()
            .map(|(name, outputs)| {
                self.layers.iter().find(|(n, _)| n == name).map_or(self.all.min(*outputs), |(_, r)| *r)
            })
            .collect())
    }
}

/// One `NAME=N` of `--layer-reuse` (the value parser; [`Reuse::resolve`] judges the numbers).
pub fn parse_item(item: &str) -> std::result::Result<(String, usize), String> {
    let (name, factor) = item.split_once('=').ok_or_else(|| format!("{item:?} is not NAME=N (e.g. fc1=4)"))?;
    let factor = factor.trim().parse().map_err(|_| format!("{item:?}: {factor:?} is not a whole number"))?;
    Ok((name.trim().to_string(), factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: [(&str, usize); 3] = [("conv1", 16), ("fc1", 32), ("ltv", 1)];

    fn reuse(all: usize, items: &[&str]) -> Reuse {
        Reuse { all, layers: items.iter().map(|i| parse_item(i).unwrap()).collect() }
    }

    fn refusal(all: usize, items: &[&str]) -> String {
        reuse(all, items).resolve(&LAYERS).unwrap_err().to_string()
    }

    #[test]
    fn named_layers_take_their_own_factor_and_the_rest_the_capped_default() {
        assert_eq!(reuse(8, &[]).resolve(&LAYERS).unwrap(), [8, 8, 1]);
        assert_eq!(reuse(2, &["fc1=16", " conv1 = 4"]).resolve(&LAYERS).unwrap(), [4, 16, 1]);
        assert_eq!(reuse(2, &["fc1=16"]).with_all(3).resolve(&LAYERS).unwrap(), [3, 16, 1]);
    }

    #[test]
    fn zeros_unknown_names_repeats_and_oversized_factors_are_refused_by_name() {
        assert!(refusal(0, &[]).contains("--reuse-factor must be at least 1"));
        assert!(refusal(1, &["fc1=0"]).contains("--layer-reuse fc1=0"));
        let e = refusal(1, &["fc2=4"]);
        assert!(e.contains("no layer \"fc2\"") && e.contains("conv1, fc1, ltv"), "{e}");
        assert!(refusal(1, &["fc1=2", "fc1=4"]).contains("names fc1 twice"));
        assert!(refusal(1, &["ltv=2"]).contains("ltv has 1 output, so its reuse factor is at most 1"));
        assert!(parse_item("fc1").unwrap_err().contains("NAME=N"));
        assert!(parse_item("fc1=-1").unwrap_err().contains("not a whole number"));
    }
}
