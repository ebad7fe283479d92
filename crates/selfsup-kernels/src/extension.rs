//! The kernels as a burn backend extension: implemented for `Flex` (the forward passes) and for
//! `Autodiff<Flex>` (recording our own backward passes). Other backends never reach it: the
//! functions in the crate root route them to burn's own operations.

use crate::activation::{leaky_relu_backward, leaky_relu_forward};
use crate::conv::{ConvGeometry, conv2d_backward, conv2d_forward};
use crate::linear::{LinearGeometry, linear_backward, linear_forward};
use crate::norm::{
    NormGeometry, batch_norm_backward, batch_norm_forward, batch_norm_relu_backward,
    batch_norm_relu_forward,
};
use crate::transformer::{
    AttentionGeometry, attention_backward, attention_forward, gelu_backward, gelu_forward,
    layer_norm_backward, layer_norm_forward,
};
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape, TensorData};

/// Operations whose CPU versions are ours.
#[backend_extension(Flex, Autodiff)]
pub trait GemmKernels: Backend {
    /// Convolution without bias (any groups, dilation, padding; one group takes our GEMM path).
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self>;

    /// Batch normalization with the batch's own statistics: `(output, mean, biased variance)`.
    fn fused_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// [`GemmKernels::fused_batch_norm`] followed by ReLU: `(max(0, output), mean, variance)`.
    fn fused_batch_norm_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Layer normalization over the last dimension (`f32` only).
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;

    /// GELU, exact form (`f32` only).
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Leaky ReLU with negative slope `slope` (`f32` only).
    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f32) -> FloatTensor<Self>;

    /// `x · weight + bias` for `x` `[rows, d_input]` and burn's `[d_input, d_output]` weight
    /// (`f32` only), each product written straight into its output (`linear.rs` says why).
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// [`GemmKernels::fused_linear`] of a layer without a bias: `x · weight`. (The extension
    /// macro of burn 0.22 does not pass an `Option` of a tensor through, hence two operations.)
    fn fused_linear_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Multi-head self-attention from the fused projection `[batch, tokens, 3 dim]` (`f32`
    /// only), causal or not: the context `[batch, tokens, dim]` and the attention `[batch,
    /// heads, tokens, tokens]` (which carries no gradient).
    fn fused_self_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
        causal: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The contiguous `f32` values of a tensor, or `None` for other dtypes.
fn values(t: &FlexTensor) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then(|| t.to_contiguous())
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("selfsup-kernels: contiguous f32 tensor")
}

fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.into()))
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// The geometry when our kernel handles the call: `f32`, one group, a kernel that fits.
fn geometry(x: &FlexTensor, w: &FlexTensor, o: &ConvOptions<2>) -> Option<ConvGeometry> {
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 || o.groups != 1 {
        return None;
    }
    let (xd, wd) = (dims4(x), dims4(w));
    if xd[1] != wd[1] {
        return None;
    }
    ConvGeometry::new(xd, wd, o.stride, o.padding, o.dilation)
}

fn norm_geometry(x: &FlexTensor) -> NormGeometry {
    let s = x.layout().shape();
    NormGeometry {
        batch: s[0],
        channels: s[1],
        spatial: (2..s.num_dims()).map(|d| s[d]).product(),
    }
}

impl GemmKernels for Flex {
    fn gemm_conv2d(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        let Some(g) = geometry(&x, &weight, &options) else {
            return Flex::conv2d(x, weight, None, options);
        };
        let (x, w) = (values(&x).unwrap(), values(&weight).unwrap());
        let out = conv2d_forward(slice(&x), slice(&w), &g);
        tensor(out, [g.batch, g.cout, g.output[0], g.output[1]])
    }

    fn fused_batch_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (Some(xv), Some(gv), Some(bv)) = (values(&x), values(&gamma), values(&beta)) else {
            let r = Flex::batch_norm_train(x, gamma, beta, epsilon);
            return (r.output, r.mean, r.variance);
        };
        let g = norm_geometry(&x);
        let (y, mean, var) = batch_norm_forward(slice(&xv), slice(&gv), slice(&bv), epsilon, &g);
        (
            tensor(y, x.layout().shape().clone()),
            tensor(mean, [g.channels]),
            tensor(var, [g.channels]),
        )
    }

    fn fused_batch_norm_relu(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (Some(xv), Some(gv), Some(bv)) = (values(&x), values(&gamma), values(&beta)) else {
            let r = Flex::batch_norm_train(x, gamma, beta, epsilon);
            return (Flex::relu(r.output), r.mean, r.variance);
        };
        let g = norm_geometry(&x);
        let (y, mean, var) =
            batch_norm_relu_forward(slice(&xv), slice(&gv), slice(&bv), epsilon, &g);
        (
            tensor(y, x.layout().shape().clone()),
            tensor(mean, [g.channels]),
            tensor(var, [g.channels]),
        )
    }

    fn fused_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        let (y, _, _) = layer_norm_forward(
            slice(&f32s(&x)),
            slice(&f32s(&gamma)),
            slice(&f32s(&beta)),
            epsilon,
        );
        tensor(y, x.layout().shape().clone())
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        let y = gelu_forward(slice(&f32s(&x)));
        tensor(y, x.layout().shape().clone())
    }

    fn fused_leaky_relu(x: FlexTensor, slope: f32) -> FlexTensor {
        let y = leaky_relu_forward(slice(&f32s(&x)), slope);
        tensor(y, x.layout().shape().clone())
    }

    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        flex_linear(&x, &weight, Some(&bias))
    }

    fn fused_linear_unbiased(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        flex_linear(&x, &weight, None)
    }

    fn fused_self_attention(
        qkv: FlexTensor,
        heads: usize,
        causal: bool,
    ) -> (FlexTensor, FlexTensor) {
        let g = attention_geometry(&qkv, heads, causal);
        let (ctx, probs) = attention_forward(slice(&f32s(&qkv)), &g);
        (
            tensor(ctx, [g.batch, g.tokens, g.dim()]),
            tensor(probs, [g.batch, g.heads, g.tokens, g.tokens]),
        )
    }
}

/// The contiguous values of an `f32` tensor; the crate-root functions send other dtypes to
/// burn's operations, so anything else here is a caller's bug.
fn f32s(t: &FlexTensor) -> FlexTensor {
    values(t).expect("selfsup-kernels: the transformer kernels take f32 tensors")
}

fn flex_linear(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>) -> FlexTensor {
    let g = linear_geometry(x, weight);
    let (xv, wv) = (f32s(x), f32s(weight));
    let bv = bias.map(f32s);
    let y = linear_forward(slice(&xv), slice(&wv), bv.as_ref().map(slice), &g);
    tensor(y, [g.rows, g.d_output])
}

fn linear_geometry(x: &FlexTensor, weight: &FlexTensor) -> LinearGeometry {
    let (s, w) = (x.layout().shape(), weight.layout().shape());
    assert!(
        s.num_dims() == 2 && w.num_dims() == 2 && s[1] == w[0],
        "linear: x must be [rows, d_input] and the weight [d_input, d_output], got {s:?} and {w:?}"
    );
    LinearGeometry {
        rows: s[0],
        d_input: s[1],
        d_output: w[1],
    }
}

fn attention_geometry(qkv: &FlexTensor, heads: usize, causal: bool) -> AttentionGeometry {
    let s = qkv.layout().shape();
    assert!(
        s.num_dims() == 3 && heads > 0 && s[2].is_multiple_of(3 * heads),
        "self-attention: qkv must be [batch, tokens, 3 * heads * head_dim], got {s:?} for {heads} heads"
    );
    AttentionGeometry {
        batch: s[0],
        tokens: s[1],
        heads,
        head_dim: s[2] / (3 * heads),
        causal,
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_id, w_id, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x_id);
        let w = checkpointer.retrieve_node_output::<FlexTensor>(w_id);
        let Some(g) = geometry(&x, &w, &options).filter(|_| grad.dtype() == DType::F32) else {
            if let Some(node) = node_x {
                let dx =
                    Flex::conv2d_x_backward(x.clone(), w.clone(), grad.clone(), options.clone());
                grads.register::<Flex>(node.id, dx);
            }
            if let Some(node) = node_w {
                grads.register::<Flex>(node.id, Flex::conv2d_weight_backward(x, w, grad, options));
            }
            return;
        };
        let (xv, wv, gv) = (
            values(&x).unwrap(),
            values(&w).unwrap(),
            values(&grad).unwrap(),
        );
        let (dx, dw) = conv2d_backward(
            slice(&xv),
            slice(&wv),
            slice(&gv),
            &g,
            node_x.is_some(),
            node_w.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, x.layout().shape().clone()));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, tensor(dw, w.layout().shape().clone()));
        }
    }
}

#[derive(Debug)]
struct NormBackward;

impl Backward<Flex, 3> for NormBackward {
    /// Input and gamma (checkpointed), the batch statistics, epsilon, and the output when a
    /// ReLU followed in the same operation (its gradient is masked by `output > 0` first).
    type State = (
        NodeId,
        NodeId,
        FlexTensor,
        FlexTensor,
        f64,
        Option<FlexTensor>,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_id, gamma_id, mean, var, epsilon, relu_out) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x_id);
        let gamma = checkpointer.retrieve_node_output::<FlexTensor>(gamma_id);
        let all = [&x, &grad, &gamma, &mean, &var].map(values);
        // The ReLU's output, when one followed: its mask is applied as the gradient is read.
        let mask = relu_out.as_ref().map(values);
        let (dx, dgamma, dbeta) = match (all, mask) {
            ([Some(xv), Some(gv), Some(gm), Some(m), Some(v)], y @ (None | Some(Some(_)))) => {
                let g = norm_geometry(&x);
                let y = y.flatten();
                let (xs, gs, gms, ms, vs) =
                    (slice(&xv), slice(&gv), slice(&gm), slice(&m), slice(&v));
                let want_dx = node_x.is_some();
                let (dx, dgamma, dbeta) = match &y {
                    None => batch_norm_backward(xs, gs, gms, ms, vs, epsilon, &g, want_dx),
                    Some(y) => batch_norm_relu_backward(
                        xs,
                        slice(y),
                        gs,
                        gms,
                        ms,
                        vs,
                        epsilon,
                        &g,
                        want_dx,
                    ),
                };
                (
                    dx.map(|d| tensor(d, x.layout().shape().clone())),
                    tensor(dgamma, [g.channels]),
                    tensor(dbeta, [g.channels]),
                )
            }
            _ => {
                let grad = match relu_out {
                    None => grad,
                    Some(y) => Flex::relu_backward(y, grad),
                };
                let r = Flex::batch_norm_train_backward(x, gamma, mean, var, epsilon, grad);
                (Some(r.x_grad), r.gamma_grad, r.beta_grad)
            }
        };
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, dbeta);
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// Input and gamma (checkpointed), each row's mean and reciprocal standard deviation.
    type State = (NodeId, NodeId, FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_id, gamma_id, mean, rstd) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x_id);
        let gamma = checkpointer.retrieve_node_output::<FlexTensor>(gamma_id);
        let (dx, dgamma, dbeta) = layer_norm_backward(
            slice(&f32s(&x)),
            slice(&f32s(&gamma)),
            slice(&mean),
            slice(&rstd),
            slice(&f32s(&grad)),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(dx, x.layout().shape().clone()));
        }
        let dim = dgamma.len();
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, [dim]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, [dim]));
        }
    }
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let x = checkpointer.retrieve_node_output::<FlexTensor>(ops.state);
        if let Some(node) = node_x {
            let dx = gelu_backward(slice(&f32s(&x)), slice(&f32s(&grad)));
            grads.register::<Flex>(node.id, tensor(dx, x.layout().shape().clone()));
        }
    }
}

#[derive(Debug)]
struct LeakyReluBackward;

impl Backward<Flex, 1> for LeakyReluBackward {
    /// The input (checkpointed) and the slope.
    type State = (NodeId, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_id, slope) = ops.state;
        let x = checkpointer.retrieve_node_output::<FlexTensor>(x_id);
        if let Some(node) = node_x {
            let dx = leaky_relu_backward(slice(&f32s(&x)), slice(&f32s(&grad)), slope);
            grads.register::<Flex>(node.id, tensor(dx, x.layout().shape().clone()));
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

/// The gradients of `x`, the weight and (with a third parent) the bias, where their nodes ask
/// for one, from the output's gradient.
fn linear_grads<const N: usize>(
    ops: Ops<(NodeId, NodeId), N>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let grad = grads.consume::<Flex>(&ops.node);
    let (x_id, w_id) = ops.state;
    let x = checkpointer.retrieve_node_output::<FlexTensor>(x_id);
    let w = checkpointer.retrieve_node_output::<FlexTensor>(w_id);
    let g = linear_geometry(&x, &w);
    let (xv, wv, gv) = (f32s(&x), f32s(&w), f32s(&grad));
    let want = [0, 1, 2].map(|i| ops.parents.get(i).is_some_and(Option::is_some));
    let (dx, dw, db) = linear_backward(slice(&xv), slice(&wv), slice(&gv), &g, want);
    let shapes = [
        Shape::from([g.rows, g.d_input]),
        Shape::from([g.d_input, g.d_output]),
        Shape::from([g.d_output]),
    ];
    for (i, (d, shape)) in [dx, dw, db].into_iter().zip(shapes).enumerate() {
        if let (Some(Some(node)), Some(d)) = (ops.parents.get(i), d) {
            grads.register::<Flex>(node.id, tensor(d, shape));
        }
    }
}

impl Backward<Flex, 3> for LinearBackward {
    /// The input and the weight (checkpointed); the third parent is the bias.
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        linear_grads(ops, grads, checkpointer);
    }
}

impl Backward<Flex, 2> for LinearBackward {
    /// The input and the weight (checkpointed); a layer without a bias.
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        linear_grads(ops, grads, checkpointer);
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    /// The projection (checkpointed), the attention probabilities (zero where a causal mask
    /// hid a token, so the backward pass needs no mask), the heads.
    type State = (NodeId, FlexTensor, usize);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_qkv] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (qkv_id, probs, heads) = ops.state;
        let qkv = checkpointer.retrieve_node_output::<FlexTensor>(qkv_id);
        if let Some(node) = node_qkv {
            let g = attention_geometry(&qkv, heads, false);
            let d = attention_backward(slice(&f32s(&qkv)), slice(&probs), slice(&f32s(&grad)), &g);
            grads.register::<Flex>(node.id, tensor(d, qkv.layout().shape().clone()));
        }
    }
}

impl<C: CheckpointStrategy> GemmKernels for Autodiff<Flex, C> {
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let w_id = prep.checkpoint(&weight);
                let out = Flex::gemm_conv2d(
                    x.primitive().clone(),
                    weight.primitive().clone(),
                    options.clone(),
                );
                prep.finish((x_id, w_id, options), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::gemm_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }

    fn fused_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tracked_batch_norm::<C>(x, gamma, beta, epsilon, false)
    }

    fn fused_batch_norm_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tracked_batch_norm::<C>(x, gamma, beta, epsilon, true)
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let gamma_id = prep.checkpoint(&gamma);
                let (xv, gv, bv) = (
                    f32s(x.primitive()),
                    f32s(gamma.primitive()),
                    f32s(beta.primitive()),
                );
                let (y, mean, rstd) =
                    layer_norm_forward(slice(&xv), slice(&gv), slice(&bv), epsilon);
                let rows = mean.len();
                let y = tensor(y, x.primitive().layout().shape().clone());
                prep.finish(
                    (x_id, gamma_id, tensor(mean, [rows]), tensor(rstd, [rows])),
                    y,
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_layer_norm(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            )),
        }
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let y = Flex::fused_gelu(x.primitive().clone());
                prep.finish(x_id, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_gelu(x.into_primitive())),
        }
    }

    fn fused_leaky_relu(x: FloatTensor<Self>, slope: f32) -> FloatTensor<Self> {
        match LeakyReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let y = Flex::fused_leaky_relu(x.primitive().clone(), slope);
                prep.finish((x_id, slope), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::fused_leaky_relu(x.into_primitive(), slope))
            }
        }
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match <LinearBackward as Backward<Flex, 3>>::prepare::<C>(
            LinearBackward,
            [x.node(), weight.node(), bias.node()],
        )
        .compute_bound()
        .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                let y = flex_linear(x.primitive(), weight.primitive(), Some(bias.primitive()));
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_linear(
                x.primitive(),
                weight.primitive(),
                Some(bias.primitive()),
            )),
        }
    }

    fn fused_linear_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match <LinearBackward as Backward<Flex, 2>>::prepare::<C>(
            LinearBackward,
            [x.node(), weight.node()],
        )
        .compute_bound()
        .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                prep.finish(state, flex_linear(x.primitive(), weight.primitive(), None))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(flex_linear(x.primitive(), weight.primitive(), None))
            }
        }
    }

    fn fused_self_attention(
        qkv: FloatTensor<Self>,
        heads: usize,
        causal: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match AttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let qkv_id = prep.checkpoint(&qkv);
                let (ctx, probs) =
                    Flex::fused_self_attention(qkv.primitive().clone(), heads, causal);
                let ctx = prep.finish((qkv_id, probs.clone(), heads), ctx);
                (ctx, Self::from_inner(probs))
            }
            OpsKind::UnTracked(prep) => {
                let (ctx, probs) = Flex::fused_self_attention(qkv.into_primitive(), heads, causal);
                (prep.finish(ctx), Self::from_inner(probs))
            }
        }
    }
}

type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// BatchNorm (then ReLU when `relu`) on `Autodiff<Flex>`, recording [`NormBackward`].
fn tracked_batch_norm<C: CheckpointStrategy>(
    x: AdTensor<C>,
    gamma: AdTensor<C>,
    beta: AdTensor<C>,
    epsilon: f64,
    relu: bool,
) -> (AdTensor<C>, AdTensor<C>, AdTensor<C>) {
    let forward = if relu {
        <Flex as GemmKernels>::fused_batch_norm_relu
    } else {
        <Flex as GemmKernels>::fused_batch_norm
    };
    match NormBackward
        .prepare::<C>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_id = prep.checkpoint(&x);
            let gamma_id = prep.checkpoint(&gamma);
            let (y, mean, var) = forward(
                x.primitive().clone(),
                gamma.primitive().clone(),
                beta.into_primitive(),
                epsilon,
            );
            let kept = relu.then(|| y.clone());
            let state = (x_id, gamma_id, mean.clone(), var.clone(), epsilon, kept);
            let y = prep.finish(state, y);
            (
                y,
                Autodiff::<Flex, C>::from_inner(mean),
                Autodiff::<Flex, C>::from_inner(var),
            )
        }
        OpsKind::UnTracked(prep) => {
            let (y, mean, var) = forward(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            );
            (
                prep.finish(y),
                Autodiff::<Flex, C>::from_inner(mean),
                Autodiff::<Flex, C>::from_inner(var),
            )
        }
    }
}
