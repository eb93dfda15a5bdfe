//! The buffers that hold tensor values, and the pool that reuses them.
//!
//! A training step makes the same buffers, of the same lengths, on every step: activations,
//! their gradients, the optimiser's temporaries. Handing each back to the system allocator
//! and asking for it again costs, for large buffers, a fresh mapping and a page fault per
//! 4 KiB on every step (glibc maps buffers above a threshold that adapts only as they are
//! freed), which a program's own `main` paid unless it tuned the allocator. So, as PyTorch's
//! CPU and CUDA caching allocators do, values keep their buffers in a pool keyed by length
//! when they are dropped, and kernels take their output buffers from it.
//!
//! Invariants:
//! - a buffer returns to the pool only when the last value (or view, such as a transpose)
//!   sharing it is dropped: `Buffer`'s `Drop` reclaims it only when no one else holds it;
//! - `vec_for` hands out a vector of length 0 whose capacity is exactly the length asked
//!   for (its old contents are unreadable through the vector): the caller writes every
//!   element before setting the length, as with `Vec::with_capacity`;
//! - buffers under [`MIN_BYTES`] or over [`MAX_BYTES`] bypass the pool (the allocator's small
//!   bins are as fast; the largest are a dataset's, not a step's);
//! - memory stays bounded: the pool keeps buffers only of lengths kernels asked for within
//!   the last [`MAX_IDLE`] requests of the element type, never more of one length than it
//!   ever had to make (the most the program needed at once), never more bytes than its
//!   limit (default [`DEFAULT_LIMIT_BYTES`], see [`set_limit`]), and [`release`] frees all
//!   it keeps. So the pool holds about one step's buffers, and when a large network is
//!   dropped and work goes on with a smaller one, the large buffers are freed within a few
//!   steps.

use std::any::Any;
use std::collections::BTreeMap;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ndarray::{ArcArray, ArrayD, ArrayViewD, IxDyn};

use super::Element;

/// Buffers smaller than this many bytes are left to the allocator.
pub const MIN_BYTES: usize = 4096;

/// Buffers larger than this many bytes are left to the allocator too: they are rare in a
/// step, and keeping them (a dataset's copies) would hold much memory for little gain.
pub const MAX_BYTES: usize = 32 << 20;

/// Requests (of one element type) after which a length no one asked for is forgotten and
/// its kept buffers freed.
pub const MAX_IDLE: u64 = 4096;

/// The most bytes the pool keeps, unless [`set_limit`] says otherwise.
pub const DEFAULT_LIMIT_BYTES: usize = 1 << 30;

static LIMIT_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT_BYTES);

/// What the pool of one element type has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Requests served from the pool.
    pub hits: u64,
    /// Requests the allocator served (no kept buffer of that length).
    pub misses: u64,
    /// Bytes kept now.
    pub kept_bytes: usize,
    /// Buffers kept now.
    pub kept_buffers: usize,
    /// Buffers freed for being idle, over the limit, or by [`release`].
    pub freed: u64,
}

/// What the pool knows of one length: the buffers kept, how many it ever had to make (the
/// most the program has needed at once, so the most worth keeping), and when it was last
/// asked for.
struct Length<T> {
    kept: Vec<Vec<T>>,
    made: usize,
    last_asked: u64,
}

/// The pool's state for one element type.
struct Free<T> {
    by_len: BTreeMap<usize, Length<T>>,
    /// Requests so far: the clock idleness is measured by.
    clock: u64,
    /// The clock value at which idle lengths are next looked for.
    next_sweep: u64,
    stats: PoolStats,
}

/// One pool per element type.
pub(crate) struct Pool<T> {
    free: Mutex<Free<T>>,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Pool {
            free: Mutex::new(Free {
                by_len: BTreeMap::new(),
                clock: 0,
                next_sweep: MAX_IDLE / 4,
                stats: PoolStats { hits: 0, misses: 0, kept_bytes: 0, kept_buffers: 0, freed: 0 },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Free<T>> {
        // The state is consistent at every point where code could panic (no user code runs
        // under the lock), so a poisoned lock is still usable.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Free<T> {
    fn bytes(len: usize) -> usize {
        len * std::mem::size_of::<T>()
    }

    /// A kept buffer of `len`, or `None` after noting that one more had to be made.
    fn take(&mut self, len: usize) -> Option<Vec<T>> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.by_len.entry(len).or_insert(Length { kept: Vec::new(), made: 0, last_asked: clock });
        entry.last_asked = clock;
        match entry.kept.pop() {
            Some(v) => {
                self.stats.hits += 1;
                self.stats.kept_bytes -= Self::bytes(len);
                self.stats.kept_buffers -= 1;
                Some(v)
            }
            None => {
                entry.made += 1;
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps `v` if its length was asked for lately and fewer are kept than were ever
    /// needed at once; otherwise hands it back, to be freed outside the lock.
    fn keep(&mut self, v: Vec<T>) -> Option<Vec<T>> {
        let len = v.capacity();
        let recent = self.clock.saturating_sub(MAX_IDLE);
        match self.by_len.get_mut(&len) {
            Some(entry) if entry.last_asked >= recent && entry.kept.len() < entry.made => {
                entry.kept.push(v);
                self.stats.kept_bytes += Self::bytes(len);
                self.stats.kept_buffers += 1;
                None
            }
            _ => Some(v),
        }
    }

    /// Forgets the lengths not asked for since `clock - MAX_IDLE`, and then the least
    /// recently asked while more than `limit` bytes are kept. Returns the buffers to free,
    /// to be dropped after the lock is released.
    fn evict(&mut self, limit: usize) -> Vec<Vec<T>> {
        let recent = self.clock.saturating_sub(MAX_IDLE);
        let mut out = Vec::new();
        self.by_len.retain(|_, entry| {
            let keep = entry.last_asked >= recent;
            if !keep {
                out.append(&mut entry.kept);
            }
            keep
        });
        let mut kept = self.stats.kept_bytes - out.iter().map(|v| Self::bytes(v.capacity())).sum::<usize>();
        while kept > limit {
            let Some((&len, _)) =
                self.by_len.iter().filter(|(_, e)| !e.kept.is_empty()).min_by_key(|(_, e)| e.last_asked)
            else {
                break;
            };
            let entry = self.by_len.get_mut(&len).expect("found above");
            kept -= Self::bytes(len) * entry.kept.len();
            out.append(&mut entry.kept);
        }
        self.stats.kept_bytes = kept;
        self.stats.kept_buffers -= out.len();
        self.stats.freed += out.len() as u64;
        out
    }
}

/// The pool for `T`, if `T` is one the pool serves (f32 and f64).
fn pool<T: Element>() -> Option<&'static Pool<T>> {
    static F32: Pool<f32> = Pool::new();
    static F64: Pool<f64> = Pool::new();
    (&F32 as &dyn Any).downcast_ref::<Pool<T>>().or_else(|| (&F64 as &dyn Any).downcast_ref::<Pool<T>>())
}

/// Whether buffers of `len` elements of `T` go through the pool.
fn pooled<T>(len: usize) -> bool {
    (MIN_BYTES..=MAX_BYTES).contains(&Free::<T>::bytes(len))
}

/// An empty vector with room for exactly `len` elements, from the pool when it keeps one.
pub(crate) fn vec_for<T: Element>(len: usize) -> Vec<T> {
    let Some(pool) = pool::<T>().filter(|_| pooled::<T>(len)) else {
        return Vec::with_capacity(len);
    };
    let (found, evicted) = {
        let mut free = pool.lock();
        let found = free.take(len);
        let evicted = if free.clock >= free.next_sweep {
            free.next_sweep = free.clock + MAX_IDLE / 4;
            free.evict(LIMIT_BYTES.load(Ordering::Relaxed))
        } else {
            Vec::new()
        };
        (found, evicted)
    };
    drop(evicted);
    match found {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(len),
    }
}

/// A vector of `len` zeros, its buffer from the pool when it keeps one.
pub(crate) fn zeros<T: Element>(len: usize) -> Vec<T> {
    let mut v = vec_for(len);
    v.resize(len, T::zero());
    v
}

/// An array of zeros of `shape`, its buffer from the pool (`ArrayD::zeros`).
pub(crate) fn array_zeros<T: Element>(shape: &[usize]) -> ArrayD<T> {
    let v = zeros(shape.iter().product());
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("the length is the shape's")
}

/// An array of `shape` with unwritten elements, its buffer from the pool (`ArrayD::uninit`).
pub(crate) fn array_uninit<T: Element>(shape: &[usize]) -> ArrayD<MaybeUninit<T>> {
    let len = shape.iter().product();
    let mut v = ManuallyDrop::new(vec_for::<T>(len));
    // SAFETY: `MaybeUninit<T>` has `T`'s size and alignment, so the allocation is the same;
    // the capacity is kept and the elements `0..len` need no initialisation as MaybeUninit.
    let v = unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut MaybeUninit<T>, len, v.capacity()) };
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("the length is the shape's")
}

/// A row-major copy of `view`, its buffer from the pool (`view.as_standard_layout().into_owned()`).
pub(crate) fn standard_copy<T: Element>(view: &ArrayViewD<'_, T>) -> ArrayD<T> {
    let mut out = array_uninit(view.shape());
    view.assign_to(&mut out);
    // SAFETY: assign_to wrote every element.
    unsafe { out.assume_init() }
}

/// `f` applied to every element of `view`, into a new row-major array from the pool.
pub(crate) fn map_view<T: Element, S: Copy>(view: &ArrayViewD<'_, S>, f: impl Fn(S) -> T) -> ArrayD<T> {
    let mut out = array_uninit(view.shape());
    ndarray::Zip::from(&mut out).and(view).for_each(|o, &x| {
        o.write(f(x));
    });
    // SAFETY: the zip wrote every element.
    unsafe { out.assume_init() }
}

/// Gives a vector's buffer to the pool (or frees it, if the pool does not keep it).
pub(crate) fn give<T: Element>(v: Vec<T>) {
    let Some(pool) = pool::<T>().filter(|_| pooled::<T>(v.capacity())) else {
        return;
    };
    let limit = LIMIT_BYTES.load(Ordering::Relaxed);
    let (refused, evicted) = {
        let mut free = pool.lock();
        let refused = free.keep(v);
        let evicted = if free.stats.kept_bytes > limit { free.evict(limit) } else { Vec::new() };
        (refused, evicted)
    };
    drop((refused, evicted));
}

/// Gives an owned array's buffer to the pool: a kernel's scratch space, once used.
pub(crate) fn give_array<T: Element, D: ndarray::Dimension>(array: ndarray::Array<T, D>) {
    give(array.into_raw_vec_and_offset().0);
}

/// What the pools of `f32` and `f64` buffers have done so far, summed.
pub fn stats() -> PoolStats {
    let mut total = PoolStats::default();
    for s in [pool::<f32>().map(|p| p.lock().stats), pool::<f64>().map(|p| p.lock().stats)].into_iter().flatten() {
        total.hits += s.hits;
        total.misses += s.misses;
        total.kept_bytes += s.kept_bytes;
        total.kept_buffers += s.kept_buffers;
        total.freed += s.freed;
    }
    total
}

/// Frees every buffer the pool keeps (as `torch.cuda.empty_cache()` does for PyTorch's),
/// e.g. after dropping a large model in a program that goes on with other work.
pub fn release() {
    fn drain<T: Element>() {
        if let Some(pool) = pool::<T>() {
            let kept = {
                let mut free = pool.lock();
                let kept: Vec<Vec<T>> = free.by_len.values_mut().flat_map(|e| std::mem::take(&mut e.kept)).collect();
                free.stats.freed += free.stats.kept_buffers as u64;
                free.stats.kept_bytes = 0;
                free.stats.kept_buffers = 0;
                kept
            };
            drop(kept);
        }
    }
    drain::<f32>();
    drain::<f64>();
}

/// Sets the most bytes the pool keeps for each element type (0 turns keeping off), and
/// frees what is kept beyond it.
pub fn set_limit(bytes: usize) {
    LIMIT_BYTES.store(bytes, Ordering::Relaxed);
    fn trim<T: Element>(limit: usize) {
        if let Some(pool) = pool::<T>() {
            let evicted = pool.lock().evict(limit);
            drop(evicted);
        }
    }
    trim::<f32>(bytes);
    trim::<f64>(bytes);
}

/// The shared array holding a tensor's value, which gives its buffer to the pool when the
/// last holder drops it.
pub(crate) struct Buffer<T: Element>(ManuallyDrop<ArcArray<T, IxDyn>>);

impl<T: Element> Buffer<T> {
    pub(crate) fn new(array: ArcArray<T, IxDyn>) -> Self {
        Buffer(ManuallyDrop::new(array))
    }
}

impl<T: Element> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        Buffer::new((*self.0).clone())
    }
}

impl<T: Element> Deref for Buffer<T> {
    type Target = ArcArray<T, IxDyn>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T: Element> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<T: Element> Drop for Buffer<T> {
    fn drop(&mut self) {
        // SAFETY: `self.0` is not used again: this is the drop.
        let array = unsafe { ManuallyDrop::take(&mut self.0) };
        if !pooled::<T>(array.len()) {
            return;
        }
        // Shared with a view still alive: the last holder gives it back.
        if let Ok(owned) = array.try_into_owned_nocopy() {
            give(owned.into_raw_vec_and_offset().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    // The pool is process-wide and tests run in parallel: each test uses lengths of its own
    // and checks only what happens to them.

    /// A value of `len` elements whose buffer came from the pool, as a kernel's output.
    fn kernel_output(len: usize) -> Tensor<f64> {
        let mut v = vec_for::<f64>(len);
        v.resize(len, 1.5);
        Tensor::from_vec(v, &[len])
    }

    fn kept(len: usize) -> usize {
        pool::<f64>().unwrap().lock().by_len.get(&len).map_or(0, |e| e.kept.len())
    }

    #[test]
    fn a_dropped_value_is_reused_for_the_same_length() {
        let len = 40_961;
        let t = kernel_output(len);
        let ptr = t.view().as_ptr();
        drop(t);
        assert_eq!(kept(len), 1);
        let v = vec_for::<f64>(len);
        assert_eq!((v.len(), v.capacity()), (0, len));
        assert_eq!(v.as_ptr(), ptr, "the dropped value's buffer is handed out again");
    }

    #[test]
    fn a_buffer_shared_by_a_view_is_kept_when_the_last_holder_drops_it() {
        let len = 2 * 20_483;
        let t = kernel_output(len).reshape(&[2, len / 2]);
        let tt = t.transpose();
        drop(t);
        assert_eq!(kept(len), 0, "the transpose still holds it");
        assert_eq!(tt.view()[[0, 1]], 1.5);
        drop(tt);
        assert_eq!(kept(len), 1);
    }

    #[test]
    fn only_lengths_kernels_asked_for_are_kept_and_no_more_than_were_needed_at_once() {
        let len = 40_973;
        drop(Tensor::<f64>::from_vec(vec![1.0; len], &[len]));
        assert_eq!(kept(len), 0, "never asked for: freed");
        let (a, b) = (kernel_output(len), kernel_output(len));
        let extra = Tensor::<f64>::from_vec(vec![1.0; len], &[len]);
        drop((a, b, extra));
        assert_eq!(kept(len), 2, "two were needed at once; the third is freed");
    }

    #[test]
    fn small_and_huge_buffers_bypass_the_pool() {
        assert!(!pooled::<f32>(100));
        assert!(!pooled::<f64>(MAX_BYTES / 8 + 1));
        assert!(pooled::<f64>(MAX_BYTES / 8));
        drop(Tensor::<f32>::from_vec(vec_for::<f32>(100).into_iter().chain([1.0; 100]).collect(), &[100]));
        assert!(!pool::<f32>().unwrap().lock().by_len.contains_key(&100));
    }

    #[test]
    fn idle_lengths_are_forgotten_and_the_least_recently_asked_go_over_the_limit() {
        let pool = Pool::<f64>::new();
        let mut f = pool.lock();
        for len in [1000usize, 2000, 3000] {
            assert!(f.take(len).is_none());
            assert!(f.keep(vec![0.0; len]).is_none(), "asked for once: kept");
            assert!(f.keep(vec![0.0; len]).is_some(), "only one was needed at once");
        }
        assert_eq!(f.stats.kept_bytes, 6000 * 8);
        let evicted = f.evict(5000 * 8);
        assert_eq!(evicted.iter().map(Vec::len).collect::<Vec<_>>(), vec![1000], "least recently asked");
        assert_eq!((f.stats.kept_bytes, f.stats.kept_buffers), (5000 * 8, 2));
        assert!(f.take(3000).is_some());
        f.clock += MAX_IDLE;
        let evicted = f.evict(usize::MAX);
        assert_eq!(evicted.iter().map(Vec::len).collect::<Vec<_>>(), vec![2000], "idle lengths go");
        assert_eq!((f.stats.kept_bytes, f.stats.kept_buffers), (0, 0));
        assert!(!f.by_len.contains_key(&2000), "and are forgotten");
        assert!(f.keep(vec![0.0; 2000]).is_some());
    }
}
