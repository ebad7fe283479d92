//! An encoder's tensors out to another library's layout ([`export`]) and a file's tensors into
//! an encoder ([`import`]), every name and shape checked.

use crate::file::{Named, Values};
use crate::layout::{Layout, arch_name, to_layout};
use burn::tensor::{DType, TensorData};
use burn_store::ModuleSnapshot;
use burn_store::burn_pack::{Bytes, Tensor as PackTensor};
use selfsup_core::{Error, Result};
use selfsup_encoders::{Arch, Backbone, EncoderConfig};
use std::collections::{BTreeSet, HashMap};

/// One of our tensors: its module path, shape and values.
pub type Own = (String, Vec<usize>, Vec<f32>);

/// Our tensors of `encoder`, in visiting order.
pub fn tensors(encoder: &Backbone) -> Result<Vec<Own>> {
    encoder
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let (name, dtype, shape, _, bytes) = t
                .into_parts()
                .map_err(|e| Error::Invalid(format!("reading the encoder's tensors: {e}")))?;
            let dims = shape.to_vec();
            let data = TensorData::from_bytes_vec(bytes.to_vec(), dims.clone(), dtype);
            let values = data
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::Invalid(format!("tensor `{name}`: {e:?}")))?;
            Ok((name, dims, values))
        })
        .collect()
}

/// The patch side and channels of a ViT backbone (0 for the others), which shape timm's
/// patch convolution.
fn patch_of(encoder: &Backbone, channels: usize) -> (usize, usize) {
    match encoder {
        Backbone::Vit(v) => (channels, v.patch_size()),
        _ => (channels, 0),
    }
}

/// The tensors of `encoder` (an `arch` for `channels`-channel images) named and shaped as
/// `layout` has them: torchvision's ResNet `state_dict` without `fc` (BatchNorm's
/// `num_batches_tracked` included, 0), timm's ViT without `head` (a fixed sine-cosine table
/// written as `pos_embed`), or ours.
pub fn export(
    encoder: &Backbone,
    arch: Arch,
    channels: usize,
    layout: Layout,
) -> Result<Vec<Named>> {
    layout.check(arch)?;
    let (channels, patch) = patch_of(encoder, channels);
    let mut out = Vec::new();
    for (name, shape, values) in tensors(encoder)? {
        let (theirs, t) = to_layout(arch, layout, &name, channels, patch)?;
        let (shape, values) = t.forward(&shape, &values);
        let counter = (layout == Layout::Torchvision)
            .then(|| theirs.strip_suffix(".running_var"))
            .flatten()
            .map(|p| format!("{p}.num_batches_tracked"));
        out.push(Named::f32(theirs, shape, values));
        if let Some(c) = counter {
            out.push(Named {
                name: c,
                shape: vec![],
                values: Values::I64(vec![0]),
            });
        }
    }
    if let (Layout::Timm, Backbone::Vit(v)) = (layout, encoder)
        && !out.iter().any(|t| t.name == "pos_embed")
    {
        let table = v.position_embedding(&burn::tensor::Device::flex());
        let shape = table.dims().to_vec();
        let values = table
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Invalid(format!("pos_embed: {e:?}")))?;
        out.push(Named::f32("pos_embed", shape, values));
    }
    Ok(out)
}

/// `encoder` (built from `cfg` for `channels`-channel images) with the weights of `file`
/// (the tensors of a weights file; its layout read from its names, [`Layout::detect`]).
/// Every tensor of the encoder must be in the file with the shape the encoder expects, and
/// every tensor of the file must be used (a whole model's classifier, `fc` or `head`, and
/// BatchNorm's step counters excepted); otherwise the error names each key at fault, the
/// shape expected, and the setting that decides it.
pub fn import(
    encoder: Backbone,
    cfg: &EncoderConfig,
    channels: usize,
    file: &[Named],
    source: &str,
) -> Result<(Backbone, Layout)> {
    let arch = cfg.arch;
    let layout = Layout::detect(file.iter().map(|t| t.name.as_str()));
    layout.check(arch).map_err(|e| {
        Error::Invalid(format!(
            "{source}: its keys are in {layout}'s layout, which has no {} encoder ({e}); \
             set encoder.arch to the file's architecture",
            arch_name(arch)
        ))
    })?;
    let (channels, patch) = patch_of(&encoder, channels);
    let by_name: HashMap<&str, &Named> = file.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    let mut applied = Vec::new();
    for (name, shape, _) in tensors(&encoder)? {
        let (theirs, t) = to_layout(arch, layout, &name, channels, patch)?;
        let expected = t.their_shape(&shape);
        let Some(found) = by_name.get(theirs.as_str()) else {
            problems.push(format!("missing key `{theirs}` (shape {expected:?})"));
            continue;
        };
        used.insert(theirs.clone());
        if found.shape != expected {
            problems.push(format!(
                "key `{theirs}`: shape {:?} in the file, {expected:?} expected{}",
                found.shape,
                hint(cfg, &theirs)
            ));
            continue;
        }
        let values = t.backward(&shape, &found.floats());
        applied.push(PackTensor::new(
            name,
            DType::F32,
            shape,
            None,
            Bytes::from_elems(values),
        ));
    }
    // A fixed sine-cosine table exported as timm's `pos_embed` loads back only as itself.
    if let (Layout::Timm, Backbone::Vit(v)) = (layout, &encoder)
        && !used.contains("pos_embed")
        && let Some(found) = by_name.get("pos_embed")
    {
        used.insert("pos_embed".into());
        let ours = v.position_embedding(&burn::tensor::Device::flex());
        let same = found.shape == ours.dims().to_vec()
            && found
                .floats()
                .iter()
                .zip(ours.into_data().convert::<f32>().iter::<f32>())
                .all(|(a, b)| (a - b).abs() <= 1e-4);
        if !same {
            problems.push(
                "key `pos_embed`: learned position embeddings, but encoder.vit.pos_embed is \
                 the fixed sine-cosine table: set encoder.vit.pos_embed = \"learned\""
                    .into(),
            );
        }
    }
    for t in file {
        if !used.contains(&t.name) && !layout.ignored(&t.name) {
            problems.push(format!(
                "unknown key `{}` (shape {:?}): no tensor of a {} encoder has it",
                t.name,
                t.shape,
                arch_name(arch)
            ));
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(12);
        let more = if n > 12 {
            format!("\n  ... and {} more", n - 12)
        } else {
            String::new()
        };
        return Err(Error::Invalid(format!(
            "{source} does not fit a {} encoder with these settings ({layout} layout):\n  {}{more}",
            arch_name(arch),
            problems.join("\n  ")
        )));
    }
    let mut encoder = encoder;
    let result = encoder.apply(applied, None, None, true);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(Error::Invalid(format!(
            "{source}: loading into the encoder failed: {:?} {:?}",
            result.errors, result.missing
        )));
    }
    Ok((encoder, layout))
}

/// Which setting decides the shape of `key`, when one does.
fn hint(cfg: &EncoderConfig, key: &str) -> String {
    match key {
        "conv1.weight" => format!(
            " (encoder.cifar_stem = {}: true is a 3x3 stem, false torchvision's 7x7)",
            cfg.cifar_stem
        ),
        "pos_embed" => " (encoder.vit.image_size / patch_size set the number of patches)".into(),
        "patch_embed.proj.weight" => " (encoder.vit.patch_size and dim)".into(),
        k if k.starts_with("blocks.") || k == "cls_token" || k.starts_with("norm.") => {
            " (encoder.vit.dim, mlp_ratio)".into()
        }
        _ => String::new(),
    }
}
