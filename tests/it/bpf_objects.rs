//! The committed BPF objects are what their sources compile to, so a plain
//! `cargo build` (which embeds them and never runs clang) ships what the C
//! says. `.ci/run` installs clang, so this never skips there.

fn committed_bpf_objects_match_their_sources() {
    let have_clang = std::process::Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_clang {
        crate::support::skip("clang is not installed (scripts/build-bpf.sh installs it)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-bpf.sh");
    let output = std::process::Command::new("bash")
        .args([script, "--check"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stale BPF objects: run scripts/build-bpf.sh and commit them\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

crate::tests![
    committed_bpf_objects_match_their_sources,
];
