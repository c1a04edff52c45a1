//! The on-disk compile cache: a second runtime on the same directory loads
//! the compiled code instead of compiling again.
#![allow(clippy::unwrap_used)] // In tests a failed unwrap is a failed test.

use vel_runtime::{Runtime, RuntimeConfig};

#[tokio::test]
async fn a_second_start_reads_compiled_code_from_the_cache() {
    let dir = std::env::temp_dir().join(format!("vel-runtime-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = RuntimeConfig {
        cache_dir: Some(dir.clone()),
        max_instances: 16,
        ..RuntimeConfig::default()
    };
    let bytes = vel_plugin_artifacts::builtin("text-match").unwrap().bytes;

    let first = Runtime::new(config.clone()).unwrap();
    let plugin = first.load(bytes).await.unwrap();
    assert!(!plugin.loaded_from_cache());
    assert_eq!(first.cache_hits(), 0);
    // Even the first load runs the code mapped from the file it just wrote
    // (not a private copy that would stay resident).
    if cfg!(target_os = "linux") {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            maps.lines().any(|l| l.contains(dir.to_str().unwrap())),
            "the freshly compiled code is mapped from the cache file"
        );
    }
    drop(plugin);
    drop(first);

    let second = Runtime::new(config).unwrap();
    let plugin = second.load(bytes).await.unwrap();
    assert!(plugin.loaded_from_cache());
    assert_eq!(second.cache_hits(), 1);
    assert_eq!(plugin.name(), "text-match");
    let entries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, 1, "one compiled file per component and engine");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn concurrent_first_loads_of_one_component_all_succeed() {
    let dir = std::env::temp_dir().join(format!("vel-runtime-cache-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = RuntimeConfig {
        cache_dir: Some(dir.clone()),
        max_instances: 16,
        ..RuntimeConfig::default()
    };
    let bytes = vel_plugin_artifacts::builtin("text-match").unwrap().bytes;
    let runtime = Runtime::new(config).unwrap();
    let loads = (0..4).map(|_| runtime.load(bytes));
    for result in futures::future::join_all(loads).await {
        let plugin = result.expect("every concurrent load succeeds");
        assert_eq!(plugin.name(), "text-match");
    }
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "no temporary file left behind: {entries:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
