//! Build script for the benchmark crate.
//!
//! Detects liburcu (Debian: `liburcu-dev`) by its `urcu/urcu-memb.h` header
//! and its `liburcu-memb` library. When both are found, compiles
//! `shim/urcu_shim.c`, links liburcu-memb and enables `cfg(have_liburcu)`.
//! When they are not, it only prints a `cargo:warning` and the crate builds
//! without the liburcu peer.
//!
//! Set `RCU_OFFLOAD_BENCH_NO_LIBURCU=1` to build as if liburcu were absent.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const HEADER: &str = "urcu/urcu-memb.h";
const PKG: &str = "liburcu-memb";
const SHIM: &str = "shim/urcu_shim.c";
const DISABLE_VAR: &str = "RCU_OFFLOAD_BENCH_NO_LIBURCU";

/// What pkg-config (or the fallback search) told us about liburcu-memb.
#[derive(Default)]
struct Probe {
    include_dirs: Vec<PathBuf>,
    lib_dirs: Vec<PathBuf>,
    libs: Vec<String>,
    cflags: Vec<String>,
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_liburcu)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={SHIM}");
    println!("cargo::rerun-if-env-changed={DISABLE_VAR}");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_LIBDIR");

    if env::var_os(DISABLE_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        println!(
            "cargo::warning=liburcu peer disabled by {DISABLE_VAR}; \
             benchmarks will run without liburcu"
        );
        return;
    }

    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        println!("cargo::warning=liburcu peer is only supported on Linux; skipping it");
        return;
    }

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let probe = pkg_config().unwrap_or_default();

    let include_dirs: Vec<PathBuf> = probe
        .include_dirs
        .iter()
        .cloned()
        .chain(standard_include_dirs(&arch))
        .collect();
    let lib_dirs: Vec<PathBuf> = probe
        .lib_dirs
        .iter()
        .cloned()
        .chain(standard_lib_dirs(&arch))
        .collect();

    let header = include_dirs
        .iter()
        .map(|d| d.join(HEADER))
        .find(|p| p.is_file());
    let library = lib_dirs.iter().find_map(|d| {
        ["liburcu-memb.so", "liburcu-memb.a"]
            .iter()
            .map(|f| d.join(f))
            .find(|p| p.exists())
    });

    let (Some(header), Some(library)) = (header, library) else {
        // Re-run once liburcu-dev gets installed: its .pc files land in one
        // of these (small) directories.
        for dir in pkg_config_dirs(&arch) {
            if dir.is_dir() {
                println!("cargo::rerun-if-changed={}", dir.display());
            }
        }
        println!(
            "cargo::warning=liburcu-dev not found (need {HEADER} and {PKG}): \
             building benchmarks without the liburcu peer"
        );
        return;
    };
    println!("cargo::rerun-if-changed={}", header.display());
    println!("cargo::rerun-if-changed={}", library.display());

    let mut build = cc::Build::new();
    build
        .file(SHIM)
        .warnings(true)
        .extra_warnings(true)
        // The shim only ends up in executables (the bench binaries), and
        // liburcu-memb.so is a load-time dependency, so its TLS reader state
        // is reachable with the initial-exec model, as in a C program
        // linking liburcu. Without this the -fPIC object would call
        // __tls_get_addr on every lock/unlock unless the linker relaxes it.
        .flag_if_supported("-ftls-model=initial-exec");
    for dir in &probe.include_dirs {
        build.include(dir);
    }
    for flag in &probe.cflags {
        build.flag(flag);
    }
    if let Err(err) = build.try_compile("urcu_shim") {
        println!(
            "cargo::warning=liburcu found but {SHIM} failed to compile ({err}); \
             building benchmarks without the liburcu peer"
        );
        return;
    }

    // Only add search paths the linker does not already know about.
    let default_dirs = default_linker_dirs(&arch);
    let mut search: Vec<PathBuf> = probe.lib_dirs.clone();
    search.extend(library.parent().map(Path::to_path_buf));
    search.dedup();
    for dir in search.iter().filter(|d| !default_dirs.contains(d)) {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
    // liburcu-memb first (it uses liburcu-common when linked statically),
    // then whatever else pkg-config listed, then pthread.
    let mut libs = vec!["urcu-memb".to_owned()];
    for lib in probe
        .libs
        .into_iter()
        .chain(["urcu-common".to_owned(), "pthread".to_owned()])
    {
        if !libs.contains(&lib) {
            libs.push(lib);
        }
    }
    // The shim (a static archive emitted by cc above) comes first on the link
    // line; these follow it so that static linkers resolve its references.
    for lib in libs {
        println!("cargo::rustc-link-lib={lib}");
    }
    println!("cargo::rustc-cfg=have_liburcu");
}

/// Asks pkg-config about liburcu-memb; `None` if pkg-config or the package
/// is unavailable.
fn pkg_config() -> Option<Probe> {
    let tool = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_owned());
    let run = |arg: &str| -> Option<String> {
        let out = Command::new(&tool).args([arg, PKG]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let cflags = run("--cflags")?;
    let libs = run("--libs")?;

    let mut probe = Probe::default();
    for tok in cflags.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-I") {
            probe.include_dirs.push(PathBuf::from(dir));
        } else {
            probe.cflags.push(tok.to_owned());
        }
    }
    for tok in libs.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            probe.lib_dirs.push(PathBuf::from(dir));
        } else if let Some(lib) = tok.strip_prefix("-l") {
            probe.libs.push(lib.to_owned());
        }
    }
    Some(probe)
}

/// The multiarch tuple Debian uses for `arch` (`x86_64` -> `x86_64-linux-gnu`).
fn multiarch(arch: &str) -> String {
    match arch {
        "x86" => "i386-linux-gnu".to_owned(),
        "arm" => "arm-linux-gnueabihf".to_owned(),
        "powerpc64" => "powerpc64le-linux-gnu".to_owned(),
        other => format!("{other}-linux-gnu"),
    }
}

fn standard_include_dirs(arch: &str) -> Vec<PathBuf> {
    vec![
        Path::new("/usr/local/include").to_path_buf(),
        Path::new("/usr/include").join(multiarch(arch)),
        Path::new("/usr/include").to_path_buf(),
    ]
}

fn standard_lib_dirs(arch: &str) -> Vec<PathBuf> {
    vec![
        Path::new("/usr/local/lib").join(multiarch(arch)),
        Path::new("/usr/local/lib").to_path_buf(),
        Path::new("/usr/lib").join(multiarch(arch)),
        Path::new("/usr/lib64").to_path_buf(),
        Path::new("/usr/lib").to_path_buf(),
    ]
}

/// Directories the system linker searches anyway.
fn default_linker_dirs(arch: &str) -> Vec<PathBuf> {
    let ma = multiarch(arch);
    vec![
        Path::new("/lib").join(&ma),
        Path::new("/usr/lib").join(&ma),
        PathBuf::from("/lib"),
        PathBuf::from("/usr/lib"),
        PathBuf::from("/lib64"),
        PathBuf::from("/usr/lib64"),
    ]
}

fn pkg_config_dirs(arch: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = standard_lib_dirs(arch)
        .into_iter()
        .map(|d| d.join("pkgconfig"))
        .collect();
    dirs.push(PathBuf::from("/usr/share/pkgconfig"));
    dirs
}
