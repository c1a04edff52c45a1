//! Cost accounting: tokens times the provider plugin's declared prices, in
//! integer nano-dollars.
//!
//! A plugin declares `f64` dollars per 1,000 tokens (the WIT contract);
//! [`PriceList::declared`] turns them into whole nano-dollars per 1,000
//! tokens once, when the plugin version is loaded. A call's cost is then
//! integer arithmetic: `(input × input price + output × output price) /
//! 1000` in `i128`, rounded half up to the nearest nano-dollar.

use vel_runtime::types::ModelInfo;

use crate::money::Money;

/// Per-1,000-token prices of one model, in nano-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prices {
    /// Nano-dollars per 1,000 prompt tokens.
    pub input_per_1k: Money,
    /// Nano-dollars per 1,000 completion tokens.
    pub output_per_1k: Money,
}

impl Prices {
    /// The prices a plugin declares, in dollars per 1,000 tokens, rounded to
    /// the nearest nano-dollar. A negative or NaN price counts as zero, so a
    /// plugin can never make a call earn money.
    pub fn from_declared_usd(input_per_1k: f64, output_per_1k: f64) -> Prices {
        let price = |usd: f64| Money::from_usd(usd).max(Money::ZERO);
        Prices {
            input_per_1k: price(input_per_1k),
            output_per_1k: price(output_per_1k),
        }
    }

    /// The cost of one call: `(input × input price + output × output
    /// price) / 1000`, rounded half up to the nearest nano-dollar, held at
    /// [`Money::MAX`] when it does not fit.
    pub fn cost(self, input_tokens: u64, output_tokens: u64) -> Money {
        let part = |tokens: u64, per_1k: Money| i128::from(tokens) * i128::from(per_1k.nanos());
        // Each part fits in an i128 (u64 × i64); their sum may not.
        let thousandths = part(input_tokens, self.input_per_1k)
            .saturating_add(part(output_tokens, self.output_per_1k));
        let nanos = thousandths.saturating_add(500).div_euclid(1000);
        Money::from_nanos(i64::try_from(nanos).unwrap_or(if nanos < 0 {
            i64::MIN
        } else {
            i64::MAX
        }))
    }
}

/// The prices of every model a provider plugin declares, converted once.
#[derive(Debug, Clone, Default)]
pub struct PriceList(Vec<(String, Prices)>);

impl PriceList {
    /// The prices `models` declare (see [`Prices::from_declared_usd`]).
    pub fn declared(models: &[ModelInfo]) -> PriceList {
        PriceList(
            models
                .iter()
                .map(|m| {
                    let prices =
                        Prices::from_declared_usd(m.input_price_per_1k, m.output_price_per_1k);
                    (m.id.clone(), prices)
                })
                .collect(),
        )
    }

    /// The prices of `model`, when the plugin declares it.
    pub fn get(&self, model: &str) -> Option<Prices> {
        self.0.iter().find(|(id, _)| id == model).map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(n: i64) -> Money {
        Money::from_nanos(n)
    }

    #[test]
    fn gpt_4o_prices_from_the_design() {
        let gpt_4o = Prices::from_declared_usd(0.0025, 0.0100);
        assert_eq!(gpt_4o.input_per_1k, nanos(2_500_000));
        assert_eq!(gpt_4o.output_per_1k, nanos(10_000_000));
        // 1.2 × $0.0025 + 0.3 × $0.01 = $0.006
        assert_eq!(gpt_4o.cost(1200, 300).to_string(), "0.006");
        assert_eq!(gpt_4o.cost(0, 0), Money::ZERO);
    }

    #[test]
    fn sub_micro_dollar_costs_are_exact() {
        // The offline mock's prices: one prompt token and two completion
        // tokens, which f64 arithmetic makes 5.000000000000001e-7.
        let mock = Prices::from_declared_usd(0.0001, 0.0002);
        assert_eq!(mock.cost(1, 2), nanos(500));
        assert_eq!(mock.cost(1, 2).to_string(), "0.0000005");
        let f64_cost = 1.0 / 1000.0 * 0.0001 + 2.0 / 1000.0 * 0.0002;
        assert_ne!(f64_cost.to_string(), "0.0000005");
    }

    #[test]
    fn rounds_half_up_to_the_nearest_nano_dollar() {
        // 1 nano-dollar per 1,000 tokens: a token costs a thousandth.
        let tiny = Prices {
            input_per_1k: nanos(1),
            output_per_1k: nanos(3),
        };
        assert_eq!(tiny.cost(499, 0), nanos(0));
        assert_eq!(tiny.cost(500, 0), nanos(1));
        assert_eq!(tiny.cost(1499, 0), nanos(1));
        assert_eq!(tiny.cost(1500, 0), nanos(2));
        // 200 × 1 + 100 × 3 = 500 thousandths: a half, rounded up.
        assert_eq!(tiny.cost(200, 100), nanos(1));
        // The two parts are added before rounding: 0.4 + 0.3 = 0.7 → 1.
        assert_eq!(tiny.cost(400, 100), nanos(1));
    }

    #[test]
    fn large_token_counts_stay_exact() {
        let gpt_4o = Prices::from_declared_usd(0.0025, 0.0100);
        // A billion tokens each way: $2,500 + $10,000.
        assert_eq!(
            gpt_4o.cost(1_000_000_000, 1_000_000_000).to_string(),
            "12500"
        );
        let all: u64 = u64::from(u32::MAX);
        assert_eq!(
            gpt_4o.cost(all, all).nanos(),
            i64::try_from(u128::from(all) * 12_500_000 / 1000).unwrap()
        );
    }

    #[test]
    fn overflow_saturates_instead_of_panicking() {
        let dear = Prices {
            input_per_1k: Money::MAX,
            output_per_1k: Money::MAX,
        };
        assert_eq!(dear.cost(u64::MAX, u64::MAX), Money::MAX);
        assert_eq!(dear.cost(2000, 0), Money::MAX);
        assert_eq!(dear.cost(1000, 0), Money::MAX);
        assert_eq!(dear.cost(1, 0), nanos(i64::MAX / 1000 + 1));
        let infinite = Prices::from_declared_usd(f64::INFINITY, 1e300);
        assert_eq!(infinite.cost(u64::MAX, u64::MAX), Money::MAX);
    }

    #[test]
    fn nonsense_prices_cost_nothing() {
        let p = Prices::from_declared_usd(-0.01, f64::NAN);
        assert_eq!(p, Prices::default());
        assert_eq!(p.cost(1000, 1000), Money::ZERO);
    }

    #[test]
    fn a_price_list_finds_declared_models_only() {
        let model = |id: &str, input: f64, output: f64| ModelInfo {
            id: id.into(),
            input_price_per_1k: input,
            output_price_per_1k: output,
            context_window: 0,
            good_for: Vec::new(),
            features: vel_runtime::types::Features::empty(),
        };
        let list = PriceList::declared(&[model("a", 0.001, 0.002), model("b", 0.0, 0.0)]);
        assert_eq!(
            list.get("a"),
            Some(Prices {
                input_per_1k: nanos(1_000_000),
                output_per_1k: nanos(2_000_000),
            })
        );
        assert_eq!(list.get("b"), Some(Prices::default()));
        assert_eq!(list.get("c"), None);
    }
}
