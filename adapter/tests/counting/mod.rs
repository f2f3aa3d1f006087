//! A counting global allocator for the adapter test binaries that measure heap (each is a
//! binary of its own with one test, so nothing else allocates meanwhile): bytes in use now,
//! and the most in use since [`PEAK`] was last set. A thread that calls [`uncounted`] (a test's
//! own loopback server, say) is left out: what it allocates and frees is not counted.
#![allow(
    unsafe_code,
    reason = "a counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to System"
)]
#![allow(dead_code, reason = "each test binary uses its own part")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

thread_local! {
    // `const`: reading it allocates nothing, so the allocator may read it.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Leaves the calling thread's allocations out of [`CURRENT`] and [`PEAK`] from now on. Only
/// for a thread whose allocations are all freed on that same thread.
pub fn uncounted() {
    UNCOUNTED.with(|u| u.set(true));
}

fn counted() -> bool {
    !UNCOUNTED.try_with(Cell::get).unwrap_or(false)
}

struct Counting;

/// Heap bytes in use.
pub static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// The most heap bytes in use since a test last stored a value here.
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Allocations of more bytes than this share the last slot of [`LIVE_BY_SIZE`].
pub const LARGEST_SIZE_SLOT: usize = 64 * 1024;
/// Live (allocated, not yet freed) counted allocations by exact requested size; slot
/// [`LARGEST_SIZE_SLOT`] holds every larger one. Read it with [`live_by_size`].
static LIVE_BY_SIZE: [AtomicIsize; LARGEST_SIZE_SLOT + 1] =
    [const { AtomicIsize::new(0) }; LARGEST_SIZE_SLOT + 1];

/// A copy of the live allocation counts by size (index = size in bytes, the last slot every
/// larger size). Subtract two copies to see what was allocated between them and is still held.
pub fn live_by_size() -> Vec<isize> {
    let copy = LIVE_BY_SIZE
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .collect::<Vec<_>>();
    copy
}

fn size_slot(size: usize) -> &'static AtomicIsize {
    &LIVE_BY_SIZE[size.min(LARGEST_SIZE_SLOT)]
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && counted() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
            size_slot(layout.size()).fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            size_slot(layout.size()).fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;
