//! The [`Tensor`] type: shared storage plus a layout, and its autodiff state.

mod create;
mod grad;

use crate::autograd::is_grad_enabled;
use crate::autograd::op::Op;
use crate::layout::Layout;
use crate::storage::Storage;
use crate::{DType, Device, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A unique id per tensor node (views of one storage have different ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(usize);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array of f32 or f64 on a device, cheap to clone (clones
/// share the node). Views share storage with their source; every op returns a
/// new tensor, and records how it was made when gradients are being tracked.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    op: Option<Op>,
    requires_grad: bool,
    /// Accumulated gradient; only leaves that require grad use it.
    grad: Mutex<Option<Tensor>>,
    /// The profiler scope the op was recorded in (only while profiling).
    scope: Option<Arc<str>>,
}

impl Tensor {
    fn build(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        op: Option<Op>,
        requires_grad: bool,
    ) -> Tensor {
        let (dtype, device) = {
            let s = storage.read().unwrap_or_else(|e| e.into_inner());
            (s.dtype(), s.device())
        };
        Tensor(Arc::new(Inner {
            id: TensorId::fresh(),
            storage,
            layout,
            dtype,
            device,
            op,
            requires_grad,
            grad: Mutex::new(None),
            scope: None,
        }))
    }

    /// A new tensor without history over fresh contiguous storage.
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        Tensor::build(
            Arc::new(RwLock::new(storage)),
            Layout::contiguous(shape),
            None,
            false,
        )
    }

    /// The result of an op: records `op` when grad mode is on and any input requires grad.
    pub(crate) fn from_op(
        storage: Storage,
        shape: &[usize],
        op: impl FnOnce() -> Op,
        inputs: &[&Tensor],
    ) -> Tensor {
        Tensor::tracked(
            Arc::new(RwLock::new(storage)),
            Layout::contiguous(shape),
            op,
            inputs,
        )
    }

    /// A view of this tensor's storage with another layout, recorded like an op.
    pub(crate) fn view_with(&self, layout: Layout, op: impl FnOnce() -> Op) -> Tensor {
        Tensor::tracked(self.0.storage.clone(), layout, op, &[self])
    }

    fn tracked(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        op: impl FnOnce() -> Op,
        inputs: &[&Tensor],
    ) -> Tensor {
        let track = is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        let op = track.then(op);
        let mut t = Tensor::build(storage, layout, op, track);
        if track && crate::profile::is_running() {
            if let Some(inner) = Arc::get_mut(&mut t.0) {
                inner.scope = Some(crate::profile::current_scope());
            }
        }
        t
    }

    /// The profiler scope this tensor's op was recorded in.
    pub(crate) fn profile_scope(&self) -> Option<&Arc<str>> {
        self.0.scope.as_ref()
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }

    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }

    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> Device {
        self.0.device
    }

    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// True for leaf variables and for results that depend on one through tracked ops.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// True when this tensor was not computed by a tracked op.
    pub fn is_leaf(&self) -> bool {
        self.0.op.is_none()
    }

    pub(crate) fn op(&self) -> Option<&Op> {
        self.0.op.as_ref()
    }

    /// Shared read access to the storage.
    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// The same data with no history and no gradient tracking.
    pub fn detach(&self) -> Tensor {
        Tensor::build(self.0.storage.clone(), self.0.layout.clone(), None, false)
    }

    /// A leaf variable over the same storage: ops on it are tracked, and
    /// `backward` accumulates its gradient (read it with [`Tensor::grad`]).
    pub fn as_variable(&self) -> Tensor {
        Tensor::build(self.0.storage.clone(), self.0.layout.clone(), None, true)
    }

    /// Placed on `device`: this tensor when it is already there, else a
    /// contiguous copy there, recorded by autodiff (the gradient is copied
    /// back to this tensor's device).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let storage = self.storage().to_device(self.layout(), device)?;
        Ok(Tensor::from_op(
            storage,
            self.shape(),
            || Op::ToDevice(self.clone()),
            &[self],
        ))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[{:?}, {:?}, {:?}{}]",
            self.shape(),
            self.dtype(),
            self.device(),
            if self.requires_grad() { ", grad" } else { "" }
        )?;
        if self.elem_count() <= 16 {
            if let Ok(v) = self.to_vec_f64() {
                write!(f, " {v:?}")?;
            }
        }
        Ok(())
    }
}
