//! The CPU emulation of a CUDA device (feature `cuda-emu`): host memory as
//! device memory, and launches handed to the emulation runtime of
//! `kernels/emu/` (built by this crate's build script from the same
//! `kernels/*.cu` sources), with the parameters packed as `cuLaunchKernel`
//! packs them (an array of pointers to the argument values).

use super::launch::{Arg, ConvParams, FtLayout, Launch};
use super::Buffer;
use crate::cpu::CpuStorage;
use crate::DType;
use std::ffi::{c_char, c_int, c_void, CString};

extern "C" {
    fn ft_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        params: *mut *mut c_void,
    ) -> c_int;
}

/// A buffer of the emulated device: host memory the kernels address directly.
pub(crate) enum HostBuffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostBuffer {
    pub fn zeros(n: usize, dtype: DType) -> HostBuffer {
        match dtype {
            DType::F32 => HostBuffer::F32(vec![0.0; n]),
            DType::F64 => HostBuffer::F64(vec![0.0; n]),
        }
    }

    pub fn from_host(data: &CpuStorage) -> HostBuffer {
        match data {
            CpuStorage::F32(v) => HostBuffer::F32(v.clone()),
            CpuStorage::F64(v) => HostBuffer::F64(v.clone()),
        }
    }

    pub fn to_host(&self) -> CpuStorage {
        match self {
            HostBuffer::F32(v) => CpuStorage::F32(v.clone()),
            HostBuffer::F64(v) => CpuStorage::F64(v.clone()),
        }
    }

    fn pointer(&self) -> *mut c_void {
        match self {
            HostBuffer::F32(v) => v.as_ptr() as *mut c_void,
            HostBuffer::F64(v) => v.as_ptr() as *mut c_void,
        }
    }

    fn pointer_mut(&mut self) -> *mut c_void {
        match self {
            HostBuffer::F32(v) => v.as_mut_ptr() as *mut c_void,
            HostBuffer::F64(v) => v.as_mut_ptr() as *mut c_void,
        }
    }
}

/// One argument's value, kept in place while the launch runs.
enum Slot {
    Ptr(*mut c_void),
    I32(i32),
    I64(i64),
    U64(u64),
    F64(f64),
    Layout(FtLayout),
    Conv(ConvParams),
}

fn host(b: &Buffer) -> Result<&HostBuffer, String> {
    match b {
        Buffer::Emu(h) => Ok(h),
        Buffer::Gpu(_) => Err("a GPU buffer passed to an emulated launch".into()),
    }
}

/// Runs `launch` on the emulation runtime.
pub(crate) fn launch(mut launch: Launch<'_>) -> Result<(), String> {
    let indices: Vec<&[i64]> = launch
        .args
        .iter()
        .filter_map(|a| match a {
            Arg::Indices(idx) => Some(*idx),
            _ => None,
        })
        .collect();
    let mut next_index = indices.iter();
    let mut slots = Vec::with_capacity(launch.args.len());
    for arg in launch.args.iter_mut() {
        slots.push(match arg {
            Arg::In(s) => Slot::Ptr(host(&s.buffer)?.pointer()),
            Arg::Out(s) => match &mut s.buffer {
                Buffer::Emu(h) => Slot::Ptr(h.pointer_mut()),
                Buffer::Gpu(_) => return Err("a GPU buffer passed to an emulated launch".into()),
            },
            Arg::Indices(_) => {
                Slot::Ptr(next_index.next().ok_or("index list")?.as_ptr() as *mut c_void)
            }
            Arg::I32(v) => Slot::I32(*v),
            Arg::I64(v) => Slot::I64(*v),
            Arg::U64(v) => Slot::U64(*v),
            Arg::F64(v) => Slot::F64(*v),
            Arg::Layout(l) => Slot::Layout(*l),
            Arg::Conv(c) => Slot::Conv(*c),
        });
    }
    // the parameter array points at the slots, which stay put from here on
    let mut params: Vec<*mut c_void> = slots
        .iter_mut()
        .map(|s| match s {
            Slot::Ptr(p) => p as *mut *mut c_void as *mut c_void,
            Slot::I32(v) => v as *mut i32 as *mut c_void,
            Slot::I64(v) => v as *mut i64 as *mut c_void,
            Slot::U64(v) => v as *mut u64 as *mut c_void,
            Slot::F64(v) => v as *mut f64 as *mut c_void,
            Slot::Layout(l) => l as *mut FtLayout as *mut c_void,
            Slot::Conv(c) => c as *mut ConvParams as *mut c_void,
        })
        .collect();
    let name = CString::new(launch.name.as_str()).map_err(|e| e.to_string())?;
    // SAFETY: the parameters follow the kernel's parameter list (types and
    // order) and point at values that outlive the call; buffers cover the
    // elements the kernel reads or writes.
    let rc = unsafe {
        ft_emu_launch(
            name.as_ptr(),
            launch.grid.as_ptr(),
            launch.block.as_ptr(),
            params.as_mut_ptr(),
        )
    };
    match rc {
        0 => Ok(()),
        1 => Err(format!("the emulation has no kernel {}", launch.name)),
        _ => Err(format!(
            "bad launch configuration grid {:?} block {:?}",
            launch.grid, launch.block
        )),
    }
}
