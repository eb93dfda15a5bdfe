//! Elementwise kernels shared by the primitives: a scalar fast path (no allocation), a
//! same-shape path, and NumPy broadcasting. Large arrays are split across rayon's threads.

use std::mem::MaybeUninit;

use ndarray::{ArrayD, IxDyn, Zip};
use rayon::prelude::*;

use crate::autodiff::graph::parallel;
use crate::tensor::shape::{broadcast_shapes, same_shape};
use crate::tensor::{Data, Element, Tensor};

/// Elements below which splitting work across threads costs more than it saves.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// How much more work a kernel needs before it is split when it is called from a thread
/// outside rayon's pool (a user's `main`): the pool's threads then do the work while the
/// caller sleeps, and handing it over and waking the caller again costs tens of µs, which
/// only work of some 100 µs repays. Measured from `main`, 2 threads: the lecture step
/// (kernels of 50,000 elements, no longer split there) 1.33–1.51 → 1.25–1.30 ms; a
/// 20-64-64-4 network on batches of 4000 (kernels of 256,000 elements, still split) 4.1–4.3
/// ms per step, against 6.7–7.3 ms with a factor of 16.
const OFF_POOL_FACTOR: usize = 4;

/// The threads a kernel of `work` units should be split over: all of the pool's from `min`
/// units on (4 × `min` when called from outside the pool), else 1. One thread never splits
/// (handing work to a one-thread pool only adds the hand-over: 2.29–2.32 → 2.11–2.16 ms per
/// lecture step from `main`).
pub(crate) fn threads_for(work: usize, min: usize) -> usize {
    // Small work is decided before asking rayon anything: asking starts the global pool.
    if work < min {
        return 1;
    }
    let min = if rayon::current_thread_index().is_some() { min } else { min.saturating_mul(OFF_POOL_FACTOR) };
    let threads = rayon::current_num_threads();
    if threads > 1 && work >= min {
        threads
    } else {
        1
    }
}

/// Runs `f` on every part, in parallel. On one of the pool's threads the parts go to
/// rayon's work stealing. Called from outside the pool (a user's `main`), this thread runs
/// the first part itself while the pool's threads run the others: handing every part over
/// and sleeping until they are done cost a wake-up of the caller on every kernel, which made
/// a loop in plain `main` ~1.4× slower than the same loop on the pool.
pub(crate) fn for_each_part<P: Send>(parts: Vec<P>, f: impl Fn(P) + Sync) {
    if parts.len() <= 1 || rayon::current_thread_index().is_some() {
        if parts.len() <= 1 {
            parts.into_iter().for_each(f);
        } else {
            parallel(|| parts.into_par_iter().for_each(&f));
        }
        return;
    }
    let mut parts = parts.into_iter();
    let first = parts.next();
    let f = &f;
    rayon::in_place_scope(|scope| {
        for part in parts {
            scope.spawn(move |_| parallel(|| f(part)));
        }
        if let Some(part) = first {
            f(part);
        }
    });
}

/// Runs `f(index, chunk)` over `out` cut into `threads` runs of whole chunks of `len`
/// (the last run may be shorter), in parallel as [`for_each_part`] does; `index` counts
/// chunks of `len` from the start of `out`.
pub(crate) fn for_each_run<T: Send>(out: &mut [T], len: usize, threads: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if len == 0 {
        return;
    }
    let chunks = out.len().div_ceil(len);
    let per_run = chunks.div_ceil(threads.max(1)).max(1);
    let runs: Vec<(usize, &mut [T])> =
        out.chunks_mut(per_run * len).enumerate().map(|(i, run)| (i * per_run, run)).collect();
    for_each_part(runs, |(first, run)| {
        for (i, chunk) in run.chunks_mut(len).enumerate() {
            f(first + i, chunk);
        }
    });
}

/// `f` applied to every element.
pub(crate) fn map<T: Element>(x: &Tensor<T>, f: impl Fn(T) -> T + Sync + Send) -> Data<T> {
    match &x.data {
        Data::Scalar(v) => Data::Scalar(f(*v)),
        Data::Array(a) => {
            if let Some(src) = a.as_slice() {
                let out = map_slice(src, &f);
                Data::from_array(ArrayD::from_shape_vec(a.raw_dim(), out).expect("same length"))
            } else if threads_for(a.len(), PARALLEL_MIN) > 1 {
                Data::from_array(parallel(|| Zip::from(a.view()).par_map_collect(|&v| f(v))))
            } else {
                Data::from_array(crate::tensor::pool::map_view(&a.view(), f))
            }
        }
    }
}

/// `f` applied elementwise to `a` and `b`, broadcast together.
///
/// # Panics
/// If the shapes cannot be broadcast; `op` names the operation.
pub(crate) fn zip<T: Element>(op: &str, a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T + Sync + Send) -> Data<T> {
    match (&a.data, &b.data) {
        (Data::Scalar(x), Data::Scalar(y)) => Data::Scalar(f(*x, *y)),
        (Data::Array(_), Data::Scalar(y)) => map(a, |v| f(v, *y)),
        (Data::Scalar(x), Data::Array(_)) => map(b, |v| f(*x, v)),
        (Data::Array(x), Data::Array(y)) => {
            let out: ArrayD<T> = if same_shape(x.shape(), y.shape()) {
                match (x.as_slice(), y.as_slice()) {
                    (Some(a), Some(b)) => {
                        ArrayD::from_shape_vec(x.raw_dim(), map2_slices(a, b, &f)).expect("same length")
                    }
                    _ => collect2(Zip::from(x.view()).and(y.view()), x.shape(), &f),
                }
            } else {
                let shape = broadcast_shapes(x.shape(), y.shape()).unwrap_or_else(|| {
                    panic!("{op}: shapes {:?} and {:?} cannot be broadcast together", x.shape(), y.shape())
                });
                let xv = x.broadcast(IxDyn(&shape)).expect("checked broadcast");
                let yv = y.broadcast(IxDyn(&shape)).expect("checked broadcast");
                collect2(Zip::from(&xv).and(&yv), &shape, &f)
            };
            Data::from_array(out)
        }
    }
}

/// `f` over a slice, into a new vector: split across threads for large slices, each part
/// run by the `wide` loop.
pub(crate) fn map_slice<S: Copy + Sync, T: Element>(a: &[S], f: &(impl Fn(S) -> T + Sync)) -> Vec<T> {
    // SAFETY: `wide::map` writes every element of its part (it asserts equal lengths).
    unsafe { collect_split(a.len(), |start, out| wide::map(&a[start..start + out.len()], out, f)) }
}

/// `f` over two slices of one length, into a new vector (see [`map_slice`]).
pub(crate) fn map2_slices<T: Element>(a: &[T], b: &[T], f: &(impl Fn(T, T) -> T + Sync)) -> Vec<T> {
    assert_eq!(a.len(), b.len(), "map2_slices: lengths differ");
    // SAFETY: as in `map_slice`.
    unsafe {
        collect_split(a.len(), |start, out| {
            let part = start..start + out.len();
            wide::map2(&a[part.clone()], &b[part], out, f)
        })
    }
}

/// `f` over three slices of one length, into a new vector (see [`map_slice`]).
pub(crate) fn map3_slices<T: Element>(a: &[T], b: &[T], c: &[T], f: &(impl Fn(T, T, T) -> T + Sync)) -> Vec<T> {
    assert!(a.len() == b.len() && a.len() == c.len(), "map3_slices: lengths differ");
    // SAFETY: as in `map_slice`.
    unsafe {
        collect_split(a.len(), |start, out| {
            let part = start..start + out.len();
            wide::map3(&a[part.clone()], &b[part.clone()], &c[part], out, f)
        })
    }
}

/// A vector of `len` values written by `fill(start, part)` over disjoint parts that cover
/// `0..len`, split across threads for large `len`.
///
/// # Safety
/// `fill` must write every element of the part it is given.
unsafe fn collect_split<T: Element>(len: usize, fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut out = crate::tensor::pool::vec_for(len);
    let parts = &mut out.spare_capacity_mut()[..len];
    let threads = threads_for(len, PARALLEL_MIN);
    if threads > 1 {
        let chunk = len.div_ceil(threads).next_multiple_of(64);
        for_each_run(parts, chunk, threads, |i, part| fill(i * chunk, part));
    } else {
        fill(0, parts);
    }
    // SAFETY: the parts cover `0..len` and the caller's `fill` wrote each completely. (Had
    // it panicked, the length would still be 0: the elements are `Copy`, nothing leaks.)
    unsafe { out.set_len(len) };
    out
}

/// Elementwise loops over slices, compiled three times: for the baseline x86-64 the crate is
/// built for (SSE2, 4 lanes of f32), with AVX2 and FMA (8 lanes), and with AVX-512 (16
/// lanes); each call runs the build of [`crate::cpu::level`]. The results are the same bits
/// (Rust never fuses a multiply and an add on its own; explicit `mul_add` is exactly rounded
/// either way); the rational tanh over 50,000 values takes 24 instead of 49 µs on one
/// thread with AVX2 (16 instead of 33 µs on two).
pub(crate) mod wide {
    use std::mem::MaybeUninit;

    use crate::cpu::Level;

    macro_rules! dispatch {
        ($generic:ident, $avx2:ident, $avx512:ident, ($($arg:ident: $ty:ty),*)) => {{
            #[cfg(target_arch = "x86_64")]
            match crate::cpu::level() {
                // SAFETY: `level` never exceeds what this CPU has, and each build is compiled
                // for exactly its level's features.
                Level::Avx512 => return unsafe { $avx512($($arg),*) },
                Level::Avx2 => return unsafe { $avx2($($arg),*) },
                Level::Baseline => {}
            }
            $generic($($arg),*)
        }};
    }

    /// `out[i] = f(a[i])`.
    pub(crate) fn map<S: Copy, T, F: Fn(S) -> T>(a: &[S], out: &mut [MaybeUninit<T>], f: &F) {
        assert_eq!(a.len(), out.len(), "wide::map: lengths differ");
        dispatch!(map_loop, map_avx2, map_avx512, (a: &[S], out: &mut [MaybeUninit<T>], f: &F))
    }

    /// `out[i] = f(a[i], b[i])`.
    pub(crate) fn map2<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: &F) {
        assert!(a.len() == out.len() && b.len() == out.len(), "wide::map2: lengths differ");
        dispatch!(map2_loop, map2_avx2, map2_avx512, (a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: &F))
    }

    /// `out[i] = f(a[i], b[i], c[i])`.
    pub(crate) fn map3<T: Copy, F: Fn(T, T, T) -> T>(a: &[T], b: &[T], c: &[T], out: &mut [MaybeUninit<T>], f: &F) {
        assert!(a.len() == out.len() && b.len() == out.len() && c.len() == out.len(), "wide::map3: lengths differ");
        dispatch!(map3_loop, map3_avx2, map3_avx512, (a: &[T], b: &[T], c: &[T], out: &mut [MaybeUninit<T>], f: &F))
    }

    #[inline(always)]
    fn map_loop<S: Copy, T, F: Fn(S) -> T>(a: &[S], out: &mut [MaybeUninit<T>], f: &F) {
        for (o, &x) in out.iter_mut().zip(a) {
            o.write(f(x));
        }
    }

    #[inline(always)]
    fn map2_loop<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: &F) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            o.write(f(x, y));
        }
    }

    #[inline(always)]
    fn map3_loop<T: Copy, F: Fn(T, T, T) -> T>(a: &[T], b: &[T], c: &[T], out: &mut [MaybeUninit<T>], f: &F) {
        for (((o, &x), &y), &z) in out.iter_mut().zip(a).zip(b).zip(c) {
            o.write(f(x, y, z));
        }
    }

    /// One build of each loop per level above the baseline.
    macro_rules! builds {
        ($features:literal, $map:ident, $map2:ident, $map3:ident) => {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            unsafe fn $map<S: Copy, T, F: Fn(S) -> T>(a: &[S], out: &mut [MaybeUninit<T>], f: &F) {
                map_loop(a, out, f)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            unsafe fn $map2<T: Copy, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [MaybeUninit<T>], f: &F) {
                map2_loop(a, b, out, f)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            unsafe fn $map3<T: Copy, F: Fn(T, T, T) -> T>(
                a: &[T],
                b: &[T],
                c: &[T],
                out: &mut [MaybeUninit<T>],
                f: &F,
            ) {
                map3_loop(a, b, c, out, f)
            }
        };
    }

    builds!("avx2,fma", map_avx2, map2_avx2, map3_avx2);
    builds!("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma", map_avx512, map2_avx512, map3_avx512);
}

fn collect2<'a, T: Element>(
    z: Zip<(ndarray::ArrayViewD<'a, T>, ndarray::ArrayViewD<'a, T>), IxDyn>,
    shape: &[usize],
    f: &(impl Fn(T, T) -> T + Sync + Send),
) -> ArrayD<T> {
    if threads_for(shape.iter().product(), PARALLEL_MIN) > 1 {
        parallel(|| z.par_map_collect(|&x, &y| f(x, y)))
    } else {
        let mut out = crate::tensor::pool::array_uninit(shape);
        z.and(&mut out).for_each(|&x, &y, o| {
            o.write(f(x, y));
        });
        // SAFETY: the zip wrote every element.
        unsafe { out.assume_init() }
    }
}

/// Converts a literal to the element type.
pub(crate) fn lit<T: Element>(x: f64) -> T {
    T::from_f64_lossy(x)
}

/// A constant scalar tensor.
pub(crate) fn c<T: Element>(x: f64) -> Tensor<T> {
    Tensor::scalar(lit(x))
}

/// Whether a recorded input wants a cotangent (constants do not).
pub(crate) fn wants<T: Element>(t: &Tensor<T>) -> bool {
    t.node.is_some()
}

/// SplitMix64: a counter-based generator, so that draw i (a dropout mask's element) needs no
/// sequential state and can be drawn again identically.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values across the range, with the edges: ±0, ±inf, NaN, subnormals, tanh's clamp.
    fn edge_values() -> Vec<f32> {
        let mut v: Vec<f32> = (0..70_001).map(|i| (i as f32 - 35_000.0) * 3e-4).collect();
        v.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, -1e-40, 7.905_311, -7.905_311, 4e-4]);
        v
    }

    #[test]
    fn wide_loops_give_the_bits_of_a_plain_loop_split_or_not() {
        // On a CPU with AVX2 the kernels run the 8-lane build; the scalar reference below is
        // the baseline build. Rounding must not differ, nor depend on the thread count. (On a
        // CPU without AVX2 both are the baseline build and only the split is tested.)
        let x = edge_values();
        let y: Vec<f32> = x.iter().map(|v| v * 0.5 - 1.0).collect();
        let tanh = |v: f32| v.tanh_fast();
        let rule = |g: f32, _x: f32, y: f32| g * (1.0 - y * y);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let t = Tensor::from_vec(x.clone(), &[x.len()]);
                let got = match map(&t, tanh) {
                    Data::Array(a) => a.iter().copied().collect::<Vec<f32>>(),
                    Data::Scalar(_) => unreachable!(),
                };
                assert_eq!(bits(&got), bits(&x.iter().map(|&v| tanh(v)).collect::<Vec<_>>()));
                let u = Tensor::from_vec(y.clone(), &[y.len()]);
                let got = match zip("mul", &t, &u, |a, b| a * b + a) {
                    Data::Array(a) => a.iter().copied().collect::<Vec<f32>>(),
                    Data::Scalar(_) => unreachable!(),
                };
                let expected: Vec<f32> = x.iter().zip(&y).map(|(&a, &b)| a * b + a).collect();
                assert_eq!(bits(&got), bits(&expected));
                let got = map3_slices(&y, &x, &x, &rule);
                let expected: Vec<f32> = y.iter().zip(&x).map(|(&g, &v)| rule(g, v, v)).collect();
                assert_eq!(bits(&got), bits(&expected));
            });
        }
    }

    #[test]
    fn the_fused_tanh_rule_gives_the_same_bits_split_or_not() {
        // 70,000 values: the backward pass's fused rule c·(1 − y²) takes the split slice path
        // on 2 threads and the single loop on 1.
        let x: Vec<f32> = edge_values().into_iter().filter(|v| v.is_finite()).collect();
        let c: Vec<f32> = (0..x.len()).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let grad = |threads: usize| -> Vec<u32> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let t = Tensor::from_vec(x.clone(), &[x.len()]).requires_grad();
                (t.tanh() * Tensor::from_vec(c.clone(), &[c.len()])).sum_all().backward();
                t.grad().unwrap().to_vec().iter().map(|v| v.to_bits()).collect()
            })
        };
        let one = grad(1);
        assert_eq!(one, grad(2));
        for (i, (&v, &w)) in x.iter().zip(&c).enumerate().step_by(997) {
            let y = v.tanh_fast();
            assert_eq!(one[i], (w * (1.0 - y * y)).to_bits(), "at {v}");
        }
    }

    #[test]
    fn work_is_split_on_the_pool_from_the_threshold_and_off_it_only_when_much_larger() {
        let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        two.install(|| {
            assert_eq!(threads_for(PARALLEL_MIN - 1, PARALLEL_MIN), 1);
            assert_eq!(threads_for(PARALLEL_MIN, PARALLEL_MIN), 2);
        });
        // One thread never splits, however large the work.
        one.install(|| assert_eq!(threads_for(usize::MAX, PARALLEL_MIN), 1));
        // A thread outside any pool (as a user's `main`) splits only much larger work.
        std::thread::spawn(|| {
            let global = rayon::current_num_threads();
            assert_eq!(threads_for(PARALLEL_MIN, PARALLEL_MIN), 1);
            let big = threads_for(PARALLEL_MIN * OFF_POOL_FACTOR, PARALLEL_MIN);
            assert_eq!(big, if global > 1 { global } else { 1 });
        })
        .join()
        .unwrap();
    }
}
