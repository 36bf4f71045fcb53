//! macOS host facts through sysctl and Mach, where Linux has /proc.

use nix::libc;

use super::OsMemory;

/// A fixed-size sysctl value by name (`hw.memsize`, `vm.swapusage`, …).
fn sysctl<T: Copy>(name: &std::ffi::CStr) -> Option<T> {
    let mut v = std::mem::MaybeUninit::<T>::uninit();
    let mut len = size_of::<T>();
    // SAFETY: the kernel writes at most `len` bytes into `v`; it is read only when the call
    // succeeded with exactly that size.
    let r = unsafe { libc::sysctlbyname(name.as_ptr(), v.as_mut_ptr().cast(), &mut len, std::ptr::null_mut(), 0) };
    (r == 0 && len == size_of::<T>()).then(|| unsafe { v.assume_init() })
}

/// A string sysctl (`machdep.cpu.brand_string`).
pub fn sysctl_string(name: &std::ffi::CStr) -> Option<String> {
    let mut buf = [0u8; 256];
    let mut len = buf.len();
    // SAFETY: the kernel writes at most `len` bytes into `buf`.
    let r = unsafe { libc::sysctlbyname(name.as_ptr(), buf.as_mut_ptr().cast(), &mut len, std::ptr::null_mut(), 0) };
    (r == 0).then(|| String::from_utf8_lossy(&buf[..len]).trim_end_matches('\0').trim().to_string())
}

/// Total from `hw.memsize`; the rest from the VM statistics (host_statistics64): free pages,
/// file-backed pages (the page cache, reclaimable) and purgeable pages count as available,
/// as Activity Monitor's "memory available" does; swap from `vm.swapusage`.
pub fn memory() -> Option<OsMemory> {
    let total: u64 = sysctl(c"hw.memsize")?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let mut vm = std::mem::MaybeUninit::<libc::vm_statistics64>::zeroed();
    let mut count = libc::HOST_VM_INFO64_COUNT;
    // SAFETY: `vm` has room for HOST_VM_INFO64_COUNT integers, the count passed in; the kernel
    // fills at most that many (older kernels fewer: the rest stays zero).
    #[allow(deprecated)] // libc points at the mach2 crate; these two calls are all we need.
    let r = unsafe {
        libc::host_statistics64(libc::mach_host_self(), libc::HOST_VM_INFO64, vm.as_mut_ptr().cast(), &mut count)
    };
    if r != libc::KERN_SUCCESS {
        return None;
    }
    // SAFETY: zero-initialised plain integers, filled by the kernel.
    let vm = unsafe { vm.assume_init() };
    let cache = vm.external_page_count as u64 * page;
    let available = (vm.free_count as u64 + vm.purgeable_count as u64) * page + cache;
    let swap: Option<libc::xsw_usage> = sysctl(c"vm.swapusage");
    Some(OsMemory {
        total,
        available: available.min(total),
        page_cache: cache,
        swap_total: swap.map_or(0, |s| s.xsu_total),
        swap_free: swap.map_or(0, |s| s.xsu_avail),
        source: "sysctl hw.memsize + host_statistics64",
    })
}
