//! Which instruction-set level adjoint's own kernels run at, chosen at run time.
//!
//! One binary serves every x86-64 CPU: the elementwise loops are compiled three times
//! (baseline x86-64, AVX2 + FMA, AVX-512) and each call takes the build of the current
//! [`level`]: the best the CPU has, unless lowered by the `ADJOINT_KERNELS` environment
//! variable (`baseline`, `avx2`, `avx512`; read once, at the first kernel) or by
//! [`force_level`] (for tests and benchmarks). A level the CPU lacks is never used. Every
//! level gives the same bits (Rust never fuses a multiply and an add on its own), except which
//! NaN (sign, payload) a NaN result carries.
//!
//! Matrix products come from the `gemm` crate, which picks its own kernels by the CPU
//! (AVX-512, FMA, or scalar) and cannot be lowered from outside; [`gemm_level`] says which.
//!
//! On other architectures the level is always [`Level::Baseline`] (the compiler's own
//! vectorisation for the target).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// An instruction-set level of x86-64, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// What every x86-64 CPU has (SSE2: 4 lanes of `f32`); on other architectures, the
    /// target's own.
    Baseline,
    /// AVX2 and FMA (8 lanes of `f32`).
    Avx2,
    /// AVX-512 F, BW, DQ and VL (16 lanes of `f32`).
    Avx512,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Baseline, Level::Avx2, Level::Avx512];

    /// The name `ADJOINT_KERNELS` takes: `baseline`, `avx2`, `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The level named `name` (as [`Level::name`] writes it), if any.
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name.trim().to_ascii_lowercase())
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The best level this CPU has.
pub fn detected() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f")
                && has!("avx512bw")
                && has!("avx512dq")
                && has!("avx512vl")
                && has!("avx2")
                && has!("fma")
            {
                return Level::Avx512;
            }
            if has!("avx2") && has!("fma") {
                return Level::Avx2;
            }
        }
        Level::Baseline
    })
}

/// Every level this CPU can run, lowest first.
pub fn available() -> Vec<Level> {
    Level::ALL.into_iter().filter(|&l| l <= detected()).collect()
}

/// 0: not forced; otherwise 1 + the forced level's index.
static FORCED: AtomicU8 = AtomicU8::new(u8::MAX);

fn code(level: Option<Level>) -> u8 {
    level.map_or(0, |l| 1 + l as u8)
}

fn decode(c: u8) -> Option<Level> {
    c.checked_sub(1).map(|i| Level::ALL[i as usize])
}

/// The level kernels run at now: the forced one (by [`force_level`], else by
/// `ADJOINT_KERNELS`), capped at what the CPU has.
#[inline]
pub fn level() -> Level {
    let mut c = FORCED.load(Ordering::Relaxed);
    if c == u8::MAX {
        c = code(from_environment());
        // Another thread may have forced a level meanwhile: keep theirs.
        let _ = FORCED.compare_exchange(u8::MAX, c, Ordering::Relaxed, Ordering::Relaxed);
        c = FORCED.load(Ordering::Relaxed);
    }
    decode(c).map_or(detected(), |l| l.min(detected()))
}

fn from_environment() -> Option<Level> {
    let value = std::env::var("ADJOINT_KERNELS").ok()?;
    let level = Level::parse(&value);
    if level.is_none() && !value.trim().is_empty() {
        eprintln!("adjoint: ADJOINT_KERNELS={value} is not baseline, avx2 or avx512; using the CPU's best");
    }
    level
}

/// Makes the kernels of the whole process run at `level` (capped at what the CPU has), or
/// back at the CPU's best with `None`; returns the level in force before. For tests and
/// benchmarks that compare levels (other threads' kernels change too).
pub fn force_level(level: Option<Level>) -> Option<Level> {
    let before = level_forced();
    FORCED.store(code(level), Ordering::Relaxed);
    before
}

/// The level forced by [`force_level`] or `ADJOINT_KERNELS`, if any.
pub fn level_forced() -> Option<Level> {
    let c = FORCED.load(Ordering::Relaxed);
    if c == u8::MAX {
        from_environment()
    } else {
        decode(c)
    }
}

/// The kernels the `gemm` crate runs matrix products with on this CPU.
pub fn gemm_level() -> Level {
    // gemm 0.19 with its `x86-v4` feature: AVX-512 F where present, else FMA (with AVX2).
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The CPU's model name (`lscpu`'s "Model name"), if the system says.
pub fn model_name() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        // The brand string from CPUID leaves 0x80000002–4 (CPUID exists on every x86-64 CPU).
        // SAFETY: CPUID is available on every x86-64 CPU (the intrinsic is safe in newer Rust).
        #[allow(unused_unsafe)]
        let max = unsafe { std::arch::x86_64::__cpuid(0x8000_0000) }.eax;
        if max >= 0x8000_0004 {
            let mut bytes = Vec::with_capacity(48);
            for leaf in 0x8000_0002u32..=0x8000_0004 {
                // SAFETY: as above; the leaf is within the maximum the CPU reported.
                #[allow(unused_unsafe)]
                let r = unsafe { std::arch::x86_64::__cpuid(leaf) };
                for word in [r.eax, r.ebx, r.ecx, r.edx] {
                    bytes.extend(word.to_le_bytes());
                }
            }
            let name =
                String::from_utf8_lossy(&bytes).trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string();
            if !name.is_empty() {
                return Some(name);
            }
        }
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse(" AVX2 "), Some(Level::Avx2));
        assert_eq!(Level::parse("sse9"), None);
        assert!(Level::Baseline < Level::Avx2 && Level::Avx2 < Level::Avx512);
        assert!(available().contains(&Level::Baseline));
        assert_eq!(*available().last().unwrap(), detected());
    }
}
