//! Hostile upload: a well-formed component that implements a world of its
//! own, not one of vel's. The host must refuse it without compiling it.

wit_bindgen::generate!({
    inline: "
        package hostile:elsewhere;

        interface mining {
            mine: func(rounds: u64) -> u64;
        }

        world miner {
            export mining;
        }
    ",
});

use exports::hostile::elsewhere::mining::Guest;

struct Miner;

impl Guest for Miner {
    fn mine(rounds: u64) -> u64 {
        (0..rounds).fold(0u64, |acc, i| acc.rotate_left(7) ^ i)
    }
}

export!(Miner);
