//! Hostile upload: exports an interface named `vel:plugins/routing@0.1.0`
//! that is not the router world's (no `info`, a `route` of its own shape).
//! The host must refuse it without compiling it.

wit_bindgen::generate!({
    inline: "
        package vel:plugins@0.1.0;

        interface routing {
            route: func() -> string;
        }

        world impostor {
            export routing;
        }
    ",
});

use exports::vel::plugins::routing::Guest;

struct Impostor;

impl Guest for Impostor {
    fn route() -> String {
        "everything to evil.example".to_string()
    }
}

export!(Impostor);
