//! A real GPU through cudarc: the context, its stream, device buffers,
//! copies, and launches of NVRTC-compiled kernels (modules loaded once per
//! device, functions cached by name).

use super::kernels::cached_ptx;
use super::launch::{Arg, Launch};
use super::Buffer;
use crate::cpu::CpuStorage;
use crate::DType;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

// SAFETY: both are #[repr(C)] structs of plain integers, laid out like the
// kernels' FtLayout and ConvParams.
unsafe impl DeviceRepr for super::launch::FtLayout {}
unsafe impl DeviceRepr for super::launch::ConvParams {}

/// Whether the CUDA driver library can be loaded on this machine.
pub(crate) fn driver_present() -> bool {
    // SAFETY: probing only tries to open the library by its known names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// A buffer in GPU memory.
pub(crate) enum GpuBuffer {
    F32(CudaSlice<f32>),
    F64(CudaSlice<f64>),
}

/// An open GPU.
pub(crate) struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

fn text(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

impl Gpu {
    /// Opens GPU `ordinal` (the driver is probed first).
    pub fn open(ordinal: usize) -> Result<Gpu, String> {
        if !driver_present() {
            return Err("no CUDA driver (libcuda.so) on this machine".into());
        }
        let count = CudaContext::device_count().map_err(text)?;
        if ordinal >= count.max(0) as usize {
            return Err(format!("this machine has {count} CUDA device(s)"));
        }
        let ctx = CudaContext::new(ordinal).map_err(text)?;
        let (major, minor) = ctx.compute_capability().map_err(text)?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            arch: format!("compute_{major}{minor}"),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// The stream every operation on this GPU is queued on.
    #[cfg(feature = "nccl")]
    pub fn stream(&self) -> Arc<CudaStream> {
        self.stream.clone()
    }

    pub fn synchronize(&self) -> Result<(), String> {
        self.stream.synchronize().map_err(text)
    }

    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "CUDA GPU".into())
    }

    pub fn zeros(&self, n: usize, dtype: DType) -> Result<GpuBuffer, String> {
        Ok(match dtype {
            DType::F32 => GpuBuffer::F32(self.stream.alloc_zeros::<f32>(n.max(1)).map_err(text)?),
            DType::F64 => GpuBuffer::F64(self.stream.alloc_zeros::<f64>(n.max(1)).map_err(text)?),
        })
    }

    pub fn upload(&self, data: &CpuStorage) -> Result<GpuBuffer, String> {
        Ok(match data {
            CpuStorage::F32(v) if v.is_empty() => self.zeros(0, DType::F32)?,
            CpuStorage::F64(v) if v.is_empty() => self.zeros(0, DType::F64)?,
            CpuStorage::F32(v) => {
                GpuBuffer::F32(self.stream.clone_htod(v.as_slice()).map_err(text)?)
            }
            CpuStorage::F64(v) => {
                GpuBuffer::F64(self.stream.clone_htod(v.as_slice()).map_err(text)?)
            }
        })
    }

    pub fn download(&self, b: &GpuBuffer) -> Result<CpuStorage, String> {
        Ok(match b {
            GpuBuffer::F32(s) => CpuStorage::F32(self.stream.clone_dtoh(s).map_err(text)?),
            GpuBuffer::F64(s) => CpuStorage::F64(self.stream.clone_dtoh(s).map_err(text)?),
        })
    }

    fn function(&self, module: &'static str, name: &str) -> Result<CudaFunction, String> {
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(f.clone());
        }
        let module_handle = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(module) {
                Some(m) => m.clone(),
                None => {
                    let ptx = cached_ptx(module, &self.arch).map_err(|e| e.to_string())?;
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_src(ptx.as_str()))
                        .map_err(text)?;
                    modules.insert(module, m.clone());
                    m
                }
            }
        };
        let f = module_handle.load_function(name).map_err(text)?;
        self.functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), f.clone());
        Ok(f)
    }

    pub fn launch(&self, mut launch: Launch<'_>) -> Result<(), String> {
        let f = self.function(launch.module, &launch.name)?;
        // index lists go up first, so the builder can borrow them
        let mut indices: Vec<CudaSlice<i64>> = Vec::new();
        for arg in &launch.args {
            if let Arg::Indices(idx) = arg {
                let data: &[i64] = if idx.is_empty() { &[0] } else { idx };
                indices.push(self.stream.clone_htod(data).map_err(text)?);
            }
        }
        let mut builder = self.stream.launch_builder(&f);
        let mut next_index = indices.iter();
        for arg in launch.args.iter_mut() {
            match arg {
                Arg::In(s) => match gpu_buffer(&s.buffer)? {
                    GpuBuffer::F32(b) => builder.arg(b),
                    GpuBuffer::F64(b) => builder.arg(b),
                },
                Arg::Out(s) => match gpu_buffer_mut(&mut s.buffer)? {
                    GpuBuffer::F32(b) => builder.arg(b),
                    GpuBuffer::F64(b) => builder.arg(b),
                },
                Arg::Indices(_) => builder.arg(next_index.next().ok_or("index list")?),
                Arg::I32(v) => builder.arg(&*v),
                Arg::I64(v) => builder.arg(&*v),
                Arg::U64(v) => builder.arg(&*v),
                Arg::F64(v) => builder.arg(&*v),
                Arg::Layout(l) => builder.arg(&*l),
                Arg::Conv(c) => builder.arg(&*c),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (launch.grid[0], launch.grid[1], launch.grid[2]),
            block_dim: (launch.block[0], launch.block[1], launch.block[2]),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow the kernel's parameter list (types
        // and order), buffers cover the elements the launch reads or writes.
        unsafe { builder.launch(cfg) }.map_err(text)?;
        Ok(())
    }
}

fn gpu_buffer(b: &Buffer) -> Result<&GpuBuffer, String> {
    match b {
        Buffer::Gpu(g) => Ok(g),
        #[cfg(feature = "cuda-emu")]
        Buffer::Emu(_) => Err("an emulated buffer passed to a GPU launch".into()),
    }
}

fn gpu_buffer_mut(b: &mut Buffer) -> Result<&mut GpuBuffer, String> {
    match b {
        Buffer::Gpu(g) => Ok(g),
        #[cfg(feature = "cuda-emu")]
        Buffer::Emu(_) => Err("an emulated buffer passed to a GPU launch".into()),
    }
}
