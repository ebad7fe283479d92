//! `selfsup export`: a run's encoder as safetensors in torchvision's or timm's layout (or
//! ours), with the JSON sidecar that says how to feed it.

use crate::evaluate::{eval_transform, load_encoder};
use crate::registry::Registry;
use selfsup_core::{Error, Result};
use selfsup_encoders::Arch;
use selfsup_interop::layout::arch_name;
use selfsup_interop::{Layout, Sidecar, export as export_tensors, file};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What [`export`] wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The safetensors file.
    pub weights: PathBuf,
    /// The sidecar beside it.
    pub sidecar: PathBuf,
    /// Its layout.
    pub layout: Layout,
    /// Tensors written.
    pub tensors: usize,
    /// What the sidecar says.
    pub info: Sidecar,
}

/// Writes the encoder of `checkpoint` (a run folder or step checkpoint) to `out` in `layout`
/// (default: torchvision for ResNets, timm for the ViT, ours for the rest) and `out`'s
/// sidecar (`.json`).
pub fn export(
    checkpoint: &Path,
    registry: &Registry,
    layout: Option<Layout>,
    out: &Path,
) -> Result<Exported> {
    let device = burn::tensor::Device::flex();
    let (cfg, encoder) = load_encoder(checkpoint, registry, &device)?;
    let arch = cfg.encoder.arch;
    let layout = layout.unwrap_or(Layout::native(arch));
    layout.check(arch)?;
    if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(Error::config(
            "--out",
            format!(
                "{}: name the file FILE.safetensors (its sidecar is FILE.json)",
                out.display()
            ),
        ));
    }
    let channels = cfg.channels();
    // The side the encoder was trained and is scored at: the crops of the run's data.
    let splits = cfg.data.load(cfg.train.seed)?;
    let transform = eval_transform(&cfg, splits.test.as_ref().unwrap_or(&splits.train));
    let tensors = export_tensors(&encoder, arch, channels, layout)?;
    let stem = matches!(arch, Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50).then(|| {
        if cfg.encoder.cifar_stem {
            "cifar"
        } else {
            "imagenet"
        }
        .to_string()
    });
    let vit = (arch == Arch::Vit).then(|| {
        let v = &cfg.encoder.vit;
        serde_json::json!({
            "img_size": v.image_size, "patch_size": v.patch_size, "embed_dim": v.dim,
            "depth": v.depth, "num_heads": v.heads, "mlp_ratio": v.mlp_ratio,
            "global_pool": match v.pool { selfsup_encoders::Pool::Cls => "token", selfsup_encoders::Pool::Mean => "avg" },
        })
    });
    let info = Sidecar {
        arch: arch_name(arch).into(),
        layout: layout.to_string(),
        channels,
        input_size: transform.size,
        mean: cfg.data.mean.clone(),
        std: cfg.data.std.clone(),
        stem,
        feature_dim: selfsup_core::Encoder::output_dim(&encoder),
        vit,
        source: format!("selfsup {} run {}", cfg.method, checkpoint.display()),
    };
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("selfsup.arch".to_string(), info.arch.clone()),
        ("selfsup.layout".to_string(), info.layout.clone()),
    ]);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    file::write(out, &tensors, meta)?;
    let sidecar = info.write(out)?;
    Ok(Exported {
        weights: out.to_path_buf(),
        sidecar,
        layout,
        tensors: tensors.len(),
        info,
    })
}

/// A run folder `out` made from an external encoder's weights (`selfsup eval ... --weights
/// FILE --arch ARCH`), so every `selfsup eval` command scores it under exactly the protocol
/// of our own runs: `config.toml` (the `simclr` preset's evaluation settings, `data`, the
/// architecture; the normalization from `FILE.json` when it is there, else measured on the
/// training images) and `encoder.bpk`. `cifar_stem` is the sidecar's `stem`, else what the
/// file's stem convolution is (3x3: the CIFAR stem, 7x7: torchvision's).
pub fn import_run(
    weights: &Path,
    arch: Arch,
    data: Option<selfsup_data::DataSpec>,
    registry: &Registry,
    out: &Path,
) -> Result<PathBuf> {
    let mut cfg = registry.get("simclr")?.preset();
    cfg.method = "external".into();
    cfg.encoder.arch = arch;
    if let Some(d) = data {
        cfg.data.spec = d;
    }
    let tensors = file::read_any(weights)?;
    let side = Sidecar::read(weights)?;
    // The stem: the sidecar's, else read off the stem convolution's kernel (3x3: CIFAR).
    cfg.encoder.cifar_stem = match side.as_ref().and_then(|s| s.stem.as_deref()) {
        Some(stem) => stem == "cifar",
        None => tensors
            .iter()
            .find(|t| t.name == "conv1.weight" || t.name == "stem.conv.weight")
            .is_none_or(|t| t.shape.last() == Some(&3)),
    };
    let splits = cfg.data.load(cfg.train.seed)?;
    let channels = splits.train.channels;
    match &side {
        Some(s) if s.mean.len() == channels => {
            cfg.data.mean = s.mean.clone();
            cfg.data.std = s.std.clone();
        }
        _ => cfg.data.resolve_normalization(&splits.train)?,
    }
    if arch == Arch::Vit
        && let Some(v) = side.as_ref().and_then(|s| s.vit.as_ref())
    {
        let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
        let vc = &mut cfg.encoder.vit;
        vc.image_size = n("img_size").unwrap_or(vc.image_size);
        vc.patch_size = n("patch_size").unwrap_or(vc.patch_size);
        vc.dim = n("embed_dim").unwrap_or(vc.dim);
        vc.depth = n("depth").unwrap_or(vc.depth);
        vc.heads = n("num_heads").unwrap_or(vc.heads);
        vc.mlp_ratio = v
            .get("mlp_ratio")
            .and_then(|x| x.as_f64())
            .unwrap_or(vc.mlp_ratio);
        if v.get("global_pool").and_then(|x| x.as_str()) == Some("avg") {
            vc.pool = selfsup_encoders::Pool::Mean;
        }
    }
    // A file with a position table loads as learned embeddings (a sine-cosine table loaded
    // so gives the same features).
    if tensors
        .iter()
        .any(|t| t.name == "pos_embed" || t.name == "pos")
    {
        cfg.encoder.vit.pos_embed = selfsup_encoders::PosEmbed::Learned;
    }
    cfg.encoder.validate()?;
    let device = burn::tensor::Device::flex();
    let fresh = cfg.encoder.init(channels, &device);
    let source = weights.display().to_string();
    let (encoder, layout) =
        selfsup_interop::import(fresh, &cfg.encoder, channels, &tensors, &source)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    cfg.save(&out.join(crate::run_dir::CONFIG_FILE))?;
    crate::run_dir::save_module(&out.join(crate::run_dir::ENCODER_FILE), &encoder)?;
    eprintln!(
        "selfsup: {} ({layout} layout) imported as a {} encoder into {}",
        weights.display(),
        arch_name(arch),
        out.display()
    );
    Ok(out.to_path_buf())
}
