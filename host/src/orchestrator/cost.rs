//! Cost accounting: tokens times the provider plugin's declared prices.

/// Per-1,000-token prices in US dollars, as a provider plugin declares them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prices {
    /// Dollars per 1,000 prompt tokens.
    pub input_per_1k: f64,
    /// Dollars per 1,000 completion tokens.
    pub output_per_1k: f64,
}

impl Prices {
    /// The cost of one call: `input/1000 × input price + output/1000 × output price`.
    pub fn cost(self, input_tokens: u64, output_tokens: u64) -> f64 {
        input_tokens as f64 / 1000.0 * self.input_per_1k
            + output_tokens as f64 / 1000.0 * self.output_per_1k
    }
}

#[cfg(test)]
mod tests {
    use super::Prices;

    #[test]
    fn gpt_4o_prices_from_the_design() {
        let gpt_4o = Prices {
            input_per_1k: 0.0025,
            output_per_1k: 0.0100,
        };
        let cost = gpt_4o.cost(1200, 300);
        assert!(
            (cost - (1.2 * 0.0025 + 0.3 * 0.0100)).abs() < 1e-12,
            "{cost}"
        );
        assert_eq!(gpt_4o.cost(0, 0), 0.0);
    }
}
