//! Hostile provider: its `info()`, which the host reads whenever it loads
//! the plugin (at upload and at every start), takes a second. Under a
//! shorter `info()` limit the load must give up on it without holding up
//! anything else, the server's start-up above all.

wit_bindgen::generate!({ path: "../../../wit", world: "provider" });

use exports::vel::plugins::completion::{
    CompletionRequest, CompletionResponse, Guest, ProviderError, ProviderInfo,
};
use vel::plugins::types::Features;

struct Hostile;

impl Guest for Hostile {
    fn info() -> ProviderInfo {
        std::thread::sleep(std::time::Duration::from_secs(1));
        ProviderInfo {
            name: "hostile-slow-info".to_string(),
            version: "0.1.0".to_string(),
            description: "Takes a second in info()".to_string(),
            models: Vec::new(),
            features: Features::empty(),
            credential: None,
            base_url_setting: None,
        }
    }

    fn complete(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        let _ = request;
        Err(ProviderError::Other("never used".to_string()))
    }

    fn complete_stream(request: CompletionRequest) -> Result<CompletionResponse, ProviderError> {
        Self::complete(request)
    }
}

export!(Hostile);
