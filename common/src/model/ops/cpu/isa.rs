//! Which instructions the CPU kernels run, found once at run time (never at build time: the
//! machines differ between sessions), each level implying the ones below it.

/// An instruction set level; each kernel maps it to its widest path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    Portable,
    /// AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Those and AVX-512 F and BW.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// Those and AVX-512 VNNI (`vpdpwssd`).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Isa {
    /// The widest this CPU runs.
    pub(crate) fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                if !(has!("avx512f") && has!("avx512bw")) {
                    return Self::Avx2;
                }
                if !has!("avx512vnni") {
                    return Self::Avx512;
                }
                return Self::Avx512Vnni;
            }
        }
        Self::Portable
    }

    /// Every level this CPU runs (for the tests that hold each path to its reference).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        let best = Self::best();
        let mut all = vec![Self::Portable];
        #[cfg(target_arch = "x86_64")]
        all.extend(
            [Self::Avx2, Self::Avx512, Self::Avx512Vnni]
                .into_iter()
                .filter(|&level| level <= best),
        );
        let _ = best;
        all
    }
}
