use std::{
    ffi::OsString,
    fs::File,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
};

use super::selftest::Temp;
use super::*;
use crate::bpf::btf_view::{
    minimal,
    tests::{SMALL_ROOTS, small_kernel},
};

fn views() -> Views {
    minimal(&small_kernel(), &SMALL_ROOTS).unwrap()
}

fn key() -> Key {
    Key::new(
        &Identity::BuildId(vec![0x85, 0xc7, 0xe4, 0xe2]),
        small_kernel().len() as u64,
        &SMALL_ROOTS,
    )
}

/// Every file name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn finds_the_gnu_build_id_among_the_kernels_notes() {
    // /sys/kernel/notes of a Xen guest: "Xen" notes around the GNU one.
    let mut notes = Vec::new();
    let mut note = |name: &[u8], kind: u32, desc: &[u8]| {
        for word in [name.len() as u32, desc.len() as u32, kind] {
            notes.extend_from_slice(&word.to_ne_bytes());
        }
        for part in [name, desc] {
            notes.extend_from_slice(part);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
    };
    note(b"Xen\0", 6, b"linux\0");
    note(b"GNU\0", 3, &[0x85, 0xc7, 0xe4, 0xe2, 0xed]);
    note(b"Linux\0", 0x100, b"6.1.102\0");
    assert_eq!(build_id(&notes), Some(&[0x85, 0xc7, 0xe4, 0xe2, 0xed][..]));
    // Cut anywhere before the build id's end: none, and no panic.
    for cut in 0..40 {
        assert_eq!(build_id(&notes[..cut]), None, "cut at {cut}");
    }
    let mut not_gnu = notes.clone();
    not_gnu[24..27].copy_from_slice(b"GNV");
    assert_eq!(build_id(&not_gnu), None);
    let mut huge = notes.clone();
    huge[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert_eq!(build_id(&huge), None);
}

#[test]
fn keys_differ_with_kernel_size_and_roots() {
    let len = small_kernel().len() as u64;
    let id = Identity::BuildId(vec![1, 2, 3]);
    let base = Key::new(&id, len, &SMALL_ROOTS);
    let others = [
        Key::new(&Identity::BuildId(vec![1, 2, 4]), len, &SMALL_ROOTS),
        Key::new(&Identity::Content(1), len, &SMALL_ROOTS),
        Key::new(&id, len + 1, &SMALL_ROOTS),
        Key::new(
            &id,
            len,
            &Roots {
                structs: &["sock_common", "sock"],
                ..SMALL_ROOTS
            },
        ),
        // A name moved from one list to another.
        Key::new(
            &id,
            len,
            &Roots {
                funcs: &["bpf_iter_x"],
                typedefs: &["btf_trace_y", "bpf_iter_z"],
                ..SMALL_ROOTS
            },
        ),
    ];
    for other in &others {
        assert_ne!(other, &base);
        assert_ne!(other.file_name(), base.file_name());
    }
    assert_eq!(Key::new(&id, len, &SMALL_ROOTS), base);
}

#[test]
fn an_entry_decodes_to_the_views_it_was_made_from() {
    let (key, views) = (key(), views());
    assert_eq!(decode(&encode(&key, &views), &key).unwrap(), views);
}

/// An entry whose checksum is good but whose ids are out of any kernel's
/// reach (only its own user can plant one): refused, not built up to
/// (an attach id of 0xFFFFFFFF grew memory to 10 GB in 17 s).
#[test]
fn ids_and_counts_beyond_the_kernel_btf_are_refused_before_anything_is_built() {
    let key = key();
    let mut views = views();
    let reseal = |views: &Views| encode(&key, views);
    views.attach[0].id = u32::MAX;
    assert!(decode(&reseal(&views), &key).is_err());
    let mut views = self::views();
    views.stats.kernel_types = usize::MAX / 2;
    assert!(decode(&reseal(&views), &key).is_err());
    // A count past the bound, with a good checksum: refused at once.
    let entry = reseal(&self::views());
    let good = decode(&entry, &key).unwrap();
    assert!(
        good.attach
            .iter()
            .all(|p| u64::from(p.id) <= key.types_bound)
    );
}

#[test]
fn damaged_truncated_and_foreign_entries_are_refused() {
    let (key, views) = (key(), views());
    let entry = encode(&key, &views);
    for cut in 0..entry.len() {
        assert!(decode(&entry[..cut], &key).is_err(), "cut at {cut}");
    }
    for at in 0..entry.len() {
        let mut bad = entry.clone();
        bad[at] ^= 0x20;
        assert!(decode(&bad, &key).is_err(), "byte {at} flipped");
    }
    let other = Key::new(&Identity::Content(7), 1, &SMALL_ROOTS);
    assert!(decode(&entry, &other).unwrap_err().contains("key differs"));
    // Another version, with a checksum of its own.
    let mut newer = entry[..entry.len() - 8].to_vec();
    newer[8..12].copy_from_slice(&(VERSION + 1).to_ne_bytes());
    let sum = hash64(&newer);
    newer.extend_from_slice(&sum.to_ne_bytes());
    assert_eq!(
        decode(&newer, &key).unwrap_err(),
        format!("version {}, not {VERSION}", VERSION + 1)
    );
}

#[test]
fn base_dir_follows_xdg_then_home() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let dir = |pairs| base_dir(&env(pairs));
    assert_eq!(
        dir(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")]),
        Ok(PathBuf::from("/x/cache"))
    );
    assert_eq!(
        dir(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/home/u")]),
        Ok(PathBuf::from("/home/u/.cache"))
    );
    assert_eq!(
        dir(&[("XDG_CACHE_HOME", ""), ("HOME", "/home/u")]),
        Ok(PathBuf::from("/home/u/.cache"))
    );
    assert!(dir(&[("HOME", "")]).is_err());
    assert!(dir(&[]).is_err());
    assert_eq!(
        dir(&[("SOCKCHECK_BTF_CACHE", "0"), ("HOME", "/home/u")]),
        Err("off (SOCKCHECK_BTF_CACHE=0)".to_string())
    );
    assert!(dir(&[("SOCKCHECK_BTF_CACHE", "1"), ("HOME", "/home/u")]).is_ok());
}

#[test]
fn a_stored_entry_loads_as_the_views_it_was_made_from() {
    let temp = Temp::new("roundtrip");
    let base = temp.0.join("cache"); // missing: created
    let dir = CacheDir::open(&base).unwrap();
    assert_eq!(dir.path(), base.join("sockcheck"));
    for path in [&base, &base.join("sockcheck")] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", path.display());
    }
    let (key, views) = (key(), views());
    assert!(matches!(dir.load(&key), Err(Miss::Absent)));
    dir.store(&key, &views).unwrap();
    assert_eq!(dir.load(&key).unwrap(), views);
    // No temporary file left; the entry only we may read or write.
    assert_eq!(names(dir.path()), [key.file_name()]);
    let entry = dir.path().join(key.file_name());
    let mode = std::fs::metadata(&entry).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Opened again, by another process as it were.
    let again = CacheDir::open(&base).unwrap();
    assert_eq!(again.load(&key).unwrap(), views);
}

#[test]
fn writing_an_entry_removes_stale_ones_and_leftover_temp_files() {
    let temp = Temp::new("prune");
    let dir = CacheDir::open(&temp.0).unwrap();
    let (key, views) = (key(), views());
    let aged = |name: &str, days: i64| {
        let path = dir.path().join(name);
        std::fs::write(&path, b"x").unwrap();
        let when = std::time::SystemTime::now()
            - std::time::Duration::from_secs((days * 24 * 3600) as u64);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    aged("btf-view-00000000000000aa", 40); // another kernel, long unused
    aged("btf-view-00000000000000bb", 2); // another build, in use
    aged(".btf-view-00000000000000cc.1.0.tmp", 1); // a killed writer's
    aged(".btf-view-00000000000000dd.2.0.tmp", 0); // being written
    aged("notes.txt", 400); // not ours to judge
    dir.store(&key, &views).unwrap();
    let mut left = names(dir.path());
    left.sort();
    let mut want = vec![
        ".btf-view-00000000000000dd.2.0.tmp".to_string(),
        "btf-view-00000000000000bb".to_string(),
        key.file_name(),
        "notes.txt".to_string(),
    ];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn a_bad_entry_is_ignored_and_rewritten() {
    let temp = Temp::new("rewrite");
    let dir = CacheDir::open(&temp.0).unwrap();
    let (key, views) = (key(), views());
    let entry = dir.path().join(key.file_name());
    let good = encode(&key, &views);
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    let mut older = good.clone();
    older[8..12].copy_from_slice(&0u32.to_ne_bytes());
    let foreign = encode(&Key::new(&Identity::Content(1), 1, &SMALL_ROOTS), &views);
    for (what, bytes) in [
        ("empty", &[][..]),
        ("truncated", &good[..good.len() - 1]),
        ("flipped", &flipped),
        ("another version", &older),
        ("another kernel", &foreign),
        ("garbage", &[0x55; 4096][..]),
    ] {
        std::fs::write(&entry, bytes).unwrap();
        match dir.load(&key) {
            Err(Miss::Invalid(why)) => assert!(!why.is_empty(), "{what}: no reason given"),
            other => panic!("{what}: {other:?}"),
        }
        dir.store(&key, &views).unwrap();
        assert_eq!(dir.load(&key).unwrap(), views, "{what}");
    }
    // An entry that is a symlink is not followed, and is replaced.
    std::fs::remove_file(&entry).unwrap();
    std::fs::write(temp.0.join("elsewhere"), &good).unwrap();
    symlink(temp.0.join("elsewhere"), &entry).unwrap();
    assert!(matches!(dir.load(&key), Err(Miss::Invalid(_))));
    dir.store(&key, &views).unwrap();
    assert!(!std::fs::symlink_metadata(&entry).unwrap().is_symlink());
    assert_eq!(dir.load(&key).unwrap(), views);
}

#[test]
fn a_writable_or_symlinked_cache_dir_is_not_used() {
    let temp = Temp::new("unsafe");
    let cache = temp.0.join("sockcheck");
    std::fs::create_dir(&cache).unwrap();
    for mode in [0o720, 0o702, 0o777] {
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).unwrap();
        let why = CacheDir::open(&temp.0).unwrap_err();
        assert!(why.contains("group- or other-writable"), "{mode:o}: {why}");
    }
    std::fs::remove_dir(&cache).unwrap();
    let real = temp.0.join("real");
    std::fs::create_dir(&real).unwrap();
    symlink(&real, &cache).unwrap();
    let why = CacheDir::open(&temp.0).unwrap_err();
    assert!(why.contains("symlink"), "{why}");
    std::fs::remove_file(&cache).unwrap();
    std::fs::write(&cache, b"").unwrap();
    assert!(CacheDir::open(&temp.0).is_err());
    // Nothing was written into the refused places.
    assert_eq!(names(&real), Vec::<String>::new());
}
