//! Build script: the CUDA kernels in `kernels/*.cu`, twice.
//!
//! 1. Simulated (always): every kernel file not marked GPU-only is compiled as C++ with the system C++ compiler
//!    (through `cc`) against `kernels/sim/cuda_sim.h` into one static library that the tests drive through
//!    `rlhf::kernels::sim`. Needs no CUDA toolkit. The compiler and flags are also written to
//!    `$OUT_DIR/sim-kernels.json`, from which `tools/kernel-mutants.py` builds mutated kernel libraries that the
//!    simulator loads at run time (`RLHF_SIM_KERNELS`).
//! 2. PTX (when nvcc is found): each file for each architecture in `RLHF_CUDA_ARCHS` (default `80,90`) with
//!    `-cubin -Xptxas -v --keep`: the cubin (embedded with `include_bytes!`, loaded on a GPU of that
//!    architecture), the PTX it was assembled from (embedded with `include_str!`, which the driver compiles
//!    on any other GPU) and the ptxas report
//!    (written to `$OUT_DIR/ptxas-report.txt`; a `cargo:warning` is printed only for spills). Without nvcc the
//!    build is CPU-only and `PTX_UNAVAILABLE_REASON` says why.
//!
//! nvcc is looked up in `NVCC`, `CUDA_HOME`/`CUDA_PATH` (`bin/nvcc`), `PATH`, then the project's pinned
//! toolchain `.toolchain/` (installed by `tools/install-nvcc.sh`). `RLHF_NO_CUDA=1` skips nvcc.
//!
//! Launch geometry (block and tile sizes, shared-memory layouts) is defined once, in `kernels/geometry.rs`,
//! compiled into this script as a module: it writes `$OUT_DIR/geometry.cuh` (on the include path of both
//! compiles) and `$OUT_DIR/geometry.rs` (included by `src/kernels/launch/mod.rs`).
//!
//! A file is GPU-only when it contains the line `// rlhf: gpu-only`; it then lists its kernels on a line
//! `// rlhf: kernels name1 name2 ...` so the build can say which kernels the simulator does not run.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "kernels/geometry.rs"]
mod geometry;

struct KernelFile {
    stem: String,
    path: PathBuf,
    gpu_only: bool,
    listed_kernels: Vec<String>,
}

fn kernel_files(dir: &Path) -> Vec<KernelFile> {
    let mut v: Vec<KernelFile> = fs::read_dir(dir)
        .expect("kernels/ directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .map(|path| {
            let src = fs::read_to_string(&path).expect("read kernel source");
            let gpu_only = src.lines().any(|l| l.trim() == "// rlhf: gpu-only");
            let listed_kernels = src
                .lines()
                .filter_map(|l| l.trim().strip_prefix("// rlhf: kernels "))
                .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .collect();
            KernelFile {
                stem: path.file_stem().unwrap().to_string_lossy().into_owned(),
                path,
                gpu_only,
                listed_kernels,
            }
        })
        .collect();
    v.sort_by(|a, b| a.stem.cmp(&b.stem));
    v
}

fn find_nvcc(root: &Path) -> Result<PathBuf, String> {
    if let Ok(p) = env::var("NVCC") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("NVCC={} does not exist", p.display())) };
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(h) = env::var(var) {
            let p = Path::new(&h).join("bin/nvcc");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    if let Ok(path) = env::var("PATH") {
        for d in env::split_paths(&path) {
            let p = d.join("nvcc");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let venv_lib = root.join(".toolchain/venv/lib");
    if let Ok(rd) = fs::read_dir(&venv_lib) {
        for e in rd.flatten() {
            let p = e.path().join("site-packages/nvidia/cu13/bin/nvcc");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("nvcc not found (looked in NVCC, CUDA_HOME, CUDA_PATH, PATH and .toolchain/; run tools/install-nvcc.sh)".into())
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kdir = root.join("kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for v in ["NVCC", "CUDA_HOME", "CUDA_PATH", "RLHF_CUDA_ARCHS", "RLHF_NO_CUDA"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if root.join(".toolchain/nvcc-path").is_file() {
        println!("cargo:rerun-if-changed=.toolchain/nvcc-path");
    }
    let files = kernel_files(&kdir);
    fs::write(out.join("geometry.cuh"), geometry::cuda_header()).unwrap();
    fs::write(out.join("geometry.rs"), geometry::rust_consts()).unwrap();

    // ---- 1. simulated build: the runtime (sim/sim_runtime.cpp) and one translation unit of every simulated
    // kernel file, the latter compiled with -fsanitize=thread: its per-access callbacks are the race checker,
    // implemented by the runtime (no sanitizer runtime is linked); and -fsanitize=bounds, whose out-of-bounds
    // callback the runtime implements too. -g1: the checker names source lines.
    let mut unit = String::from(
        "// generated by build.rs\n#include \"sim/cuda_sim.h\"\nextern \"C\" void rlhf_sim_kernels_anchor() {}\n",
    );
    for f in files.iter().filter(|f| !f.gpu_only) {
        writeln!(unit, "#include \"{}\"", f.path.display()).unwrap();
    }
    // Test-only kernels (planted bugs): simulator only.
    for f in kernel_files(&kdir.join("testing")) {
        writeln!(unit, "#include \"{}\"", f.path.display()).unwrap();
    }
    let unit_path = out.join("rlhf_sim_all.cpp");
    fs::write(&unit_path, unit).unwrap();
    let sim_build = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .include(&kdir)
            .include(&out)
            .define("RLHF_SIM", "1")
            .flag("-std=c++17")
            .flag("-fno-strict-aliasing")
            .flag("-g1")
            .flag_if_supported("-Wno-unknown-pragmas")
            .flag_if_supported("-Wno-unused-parameter")
            .opt_level(2)
            .debug(false);
        b
    };
    let runtime = sim_build().file(kdir.join("sim/sim_runtime.cpp")).compile_intermediates();
    let mut kernels = sim_build();
    kernels.file(&unit_path).flag("-fsanitize=thread");
    // Array bounds: every index into an array of known size is checked; the runtime defines the callback.
    kernels.flag_if_supported("-fsanitize=bounds");
    // GCC: no function entry/exit callbacks (the runtime defines them as no-ops for other compilers).
    kernels.flag_if_supported("--param=tsan-instrument-func-entry-exit=0");
    for o in &runtime {
        kernels.object(o);
    }
    let recipe = sim_recipe(&kernels.get_compiler(), &kdir, &runtime, &files);
    fs::write(out.join("sim-kernels.json"), recipe).unwrap();
    kernels.compile("rlhf_sim");

    // ---- 2. PTX through nvcc
    let archs: Vec<u32> = env::var("RLHF_CUDA_ARCHS")
        .unwrap_or_else(|_| "80,90".into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim().trim_start_matches("sm_").parse().expect("RLHF_CUDA_ARCHS: comma-separated numbers like 80,90")
        })
        .collect();
    let nvcc = if env::var("RLHF_NO_CUDA").is_ok_and(|v| v != "0") {
        Err("built with RLHF_NO_CUDA set".to_string())
    } else {
        find_nvcc(&root)
    };

    let mut rs = String::from("// generated by build.rs\n");
    let mut report = String::new();
    let mut modules = Vec::new();
    let reason: Option<String> = match &nvcc {
        Err(why) => Some(why.clone()),
        Ok(nvcc) => {
            let jobs: Vec<(&KernelFile, u32)> = files.iter().flat_map(|f| archs.iter().map(move |&a| (f, a))).collect();
            let results: Vec<Result<Compiled, String>> = std::thread::scope(|s| {
                let hs: Vec<_> = jobs
                    .iter()
                    .map(|&(f, arch)| {
                        let out = out.clone();
                        let kdir = kdir.clone();
                        s.spawn(move || compile_ptx(nvcc, &kdir, &out, f, arch))
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut err = None;
            for r in results {
                match r {
                    Ok((stem, arch, ptx, cubin, rep)) => {
                        report.push_str(&rep);
                        modules.push((stem, arch, ptx, cubin));
                    }
                    Err(e) => err = Some(e),
                }
            }
            if let Some(e) = err {
                panic!("nvcc failed (set RLHF_NO_CUDA=1 to build without PTX):\n{e}");
            }
            None
        }
    };
    fs::write(out.join("ptxas-report.txt"), &report).unwrap();
    for (kernel, spill) in spills(&report) {
        println!("cargo:warning=ptxas: {kernel} spills ({spill}); see {}", out.join("ptxas-report.txt").display());
    }
    if let Some(r) = &reason {
        println!("cargo:warning=CUDA kernels not compiled to PTX: {r}; building the CPU-only engine (the simulator is built regardless)");
    }

    writeln!(rs, "/// Why this build has no PTX for the GPU (None when every kernel was compiled).").unwrap();
    writeln!(rs, "pub const PTX_UNAVAILABLE_REASON: Option<&str> = {:?};", reason).unwrap();
    writeln!(rs, "/// Compiled modules: (kernel file stem, SM architecture, PTX text).").unwrap();
    writeln!(rs, "pub const PTX_MODULES: &[(&str, u32, &str)] = &[").unwrap();
    for (stem, arch, ptx, _) in &modules {
        writeln!(rs, "    ({:?}, {}, include_str!({:?})),", stem, arch, ptx.display().to_string()).unwrap();
    }
    writeln!(rs, "];").unwrap();
    writeln!(rs, "/// The same modules as machine code: (kernel file stem, SM architecture, cubin).").unwrap();
    writeln!(rs, "pub const CUBIN_MODULES: &[(&str, u32, &[u8])] = &[").unwrap();
    for (stem, arch, _, cubin) in &modules {
        writeln!(rs, "    ({:?}, {}, include_bytes!({:?})),", stem, arch, cubin.display().to_string()).unwrap();
    }
    writeln!(rs, "];").unwrap();
    writeln!(rs, "/// Kernel files compiled into the simulator.").unwrap();
    let sim: Vec<&str> = files.iter().filter(|f| !f.gpu_only).map(|f| f.stem.as_str()).collect();
    writeln!(rs, "pub const SIM_FILES: &[&str] = &{:?};", sim).unwrap();
    writeln!(rs, "/// Kernels that only run on the GPU (files marked `// rlhf: gpu-only`), by file.").unwrap();
    let gpu: Vec<(&str, &[String])> =
        files.iter().filter(|f| f.gpu_only).map(|f| (f.stem.as_str(), f.listed_kernels.as_slice())).collect();
    writeln!(rs, "pub const GPU_ONLY_KERNELS: &[(&str, &[&str])] = &[").unwrap();
    for (stem, ks) in gpu {
        writeln!(rs, "    ({:?}, &{:?}),", stem, ks).unwrap();
    }
    writeln!(rs, "];").unwrap();
    writeln!(rs, "/// The ptxas -v report of this build (empty without nvcc).").unwrap();
    writeln!(
        rs,
        "pub const PTXAS_REPORT: &str = include_str!({:?});",
        out.join("ptxas-report.txt").display().to_string()
    )
    .unwrap();
    fs::write(out.join("kernels_gen.rs"), rs).unwrap();
}

/// `$OUT_DIR/sim-kernels.json`: how this build compiles the simulated kernels, for `tools/kernel-mutants.py`,
/// which builds a kernel library of its own (a shared object the simulator loads through `RLHF_SIM_KERNELS`)
/// with the same compiler and flags: `cxx` and `cxx_flags` compile one kernel file (`-x c++ -c FILE.cu`; the
/// flags carry `-I kernels_dir`, the generated headers' directory and `-fsanitize=thread`), `runtime_objects`
/// are the simulator runtime's objects (position independent), `kernel_files` and `testing_files` what the
/// simulator library holds.
fn sim_recipe(cc: &cc::Tool, kdir: &Path, runtime: &[PathBuf], files: &[KernelFile]) -> String {
    fn q(s: &str) -> String {
        let mut o = String::from("\"");
        for ch in s.chars() {
            match ch {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                c => o.push(c),
            }
        }
        o.push('"');
        o
    }
    fn list<'a>(v: impl Iterator<Item = std::borrow::Cow<'a, str>>) -> String {
        format!("[{}]", v.map(|s| q(&s)).collect::<Vec<_>>().join(", "))
    }
    let testing = kernel_files(&kdir.join("testing"));
    format!(
        "{{\n  \"cxx\": {},\n  \"cxx_flags\": {},\n  \"kernels_dir\": {},\n  \"runtime_objects\": {},\n  \"kernel_files\": {},\n  \"testing_files\": {}\n}}\n",
        q(&cc.path().to_string_lossy()),
        list(cc.args().iter().map(|a| a.to_string_lossy())),
        q(&kdir.to_string_lossy()),
        list(runtime.iter().map(|p| p.to_string_lossy())),
        list(files.iter().filter(|f| !f.gpu_only).map(|f| f.path.to_string_lossy())),
        list(testing.iter().map(|f| f.path.to_string_lossy())),
    )
}

/// One kernel file compiled for one architecture: (stem, arch, path of the kept PTX, path of the cubin, ptxas report).
type Compiled = (String, u32, PathBuf, PathBuf, String);

/// nvcc -cubin -Xptxas -v --keep.
fn compile_ptx(nvcc: &Path, kdir: &Path, out: &Path, f: &KernelFile, arch: u32) -> Result<Compiled, String> {
    let keep = out.join(format!("nvcc-{}-sm{}", f.stem, arch));
    fs::create_dir_all(&keep).map_err(|e| e.to_string())?;
    let cubin = keep.join(format!("{}.cubin", f.stem));
    let o = Command::new(nvcc)
        .arg("-cubin")
        .arg(format!("-arch=sm_{arch}"))
        .args(["-O3", "-std=c++17", "-lineinfo", "-Xptxas", "-v", "--keep", "--keep-dir"])
        .arg(&keep)
        .arg("-I")
        .arg(kdir)
        .arg("-I")
        .arg(out)
        .arg("-o")
        .arg(&cubin)
        .arg(&f.path)
        .output()
        .map_err(|e| format!("running {}: {e}", nvcc.display()))?;
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        return Err(format!("{} (sm_{arch}):\n{stderr}", f.path.display()));
    }
    let ptx = keep.join(format!("{}.ptx", f.stem));
    if !ptx.is_file() {
        return Err(format!("nvcc --keep left no {}", ptx.display()));
    }
    if !cubin.is_file() {
        return Err(format!("nvcc left no {}", cubin.display()));
    }
    Ok((f.stem.clone(), arch, ptx, cubin, format!("== {} sm_{arch}\n{stderr}", f.stem)))
}

/// (kernel, "N bytes spill stores, M bytes spill loads") for every function of the report that spills.
fn spills(report: &str) -> Vec<(String, String)> {
    let mut cur = String::new();
    let mut v = Vec::new();
    for l in report.lines() {
        if let Some(rest) = l.split("Function properties for ").nth(1) {
            cur = rest.trim().to_string();
        }
        if l.contains("spill stores") {
            let stores = l
                .split("bytes spill stores")
                .next()
                .and_then(|s| s.rsplit(',').next())
                .unwrap_or("")
                .trim()
                .to_string();
            if stores != "0" || !l.contains(" 0 bytes spill loads") {
                v.push((cur.clone(), l.trim().to_string()));
            }
        }
    }
    v
}
