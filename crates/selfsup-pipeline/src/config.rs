//! The full configuration of a run, as written to `RUN_DIR/config.toml`: the sections every
//! method shares, `method = "NAME"`, and the method's own settings in its `[NAME]` table,
//! which its [`crate::Recipe`] parses into its typed config.

use crate::registry::Registry;
use selfsup_core::config::{from_toml, to_toml};
use selfsup_core::{DeviceSpec, Error, OptimizerKind, Precision, Result, TrainConfig};
use selfsup_data::{AugmentConfig, DataConfig};
use selfsup_encoders::{Arch, DcganConfig, EncoderConfig, VitConfig};
use selfsup_eval::{FinetuneConfig, KnnConfig, LinearProbeConfig};
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything a run needs; every key has a default, unknown keys are rejected.
///
/// In TOML: the shared sections, `method = "NAME"` and the method's `[NAME]` table
/// ([`RunConfig::settings`]). A file only needs the keys it changes: [`RunConfig::parse`]
/// reads them over the method's preset.
#[derive(Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct RunConfig {
    /// The pretraining method: a recipe's name.
    pub method: String,
    /// Compute device: `flex` (CPU), `wgpu` or `cuda:N`.
    pub device: DeviceSpec,
    /// Data-parallel training over these devices (the first one is `device`, which holds the
    /// model); empty: `device` alone. Every method whose objective is `Shardable`.
    pub devices: Vec<DeviceSpec>,
    /// The images.
    pub data: DataConfig,
    /// The augmentations of each view.
    pub augment: AugmentConfig,
    /// The backbone.
    pub encoder: EncoderConfig,
    /// The training loop.
    pub train: TrainConfig,
    /// The method's own settings, the `[NAME]` table; its recipe reads them with
    /// [`RunConfig::settings`].
    #[schemars(skip)]
    pub settings: toml::Table,
    /// The kNN evaluation.
    pub knn: KnnConfig,
    /// The linear probe.
    pub linear: LinearProbeConfig,
    /// Fine-tuning (`selfsup eval finetune`).
    pub finetune: FinetuneConfig,
    /// What runs during and after pretraining.
    pub eval: EvalConfig,
}

/// Evaluation during and after pretraining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Online monitor: kNN top-1 on the test split every this many epochs (0: never).
    pub monitor_every: usize,
    /// Training images the monitor's kNN votes with (0: all).
    pub monitor_train: usize,
    /// Test images the monitor scores (0: all).
    pub monitor_test: usize,
    /// Run the linear probe after pretraining (kNN always runs).
    pub linear: bool,
    /// Score the raw-pixel and random-init baselines beside the encoder.
    pub baselines: bool,
    /// Features for kNN, the probe and the monitor: 1, the encoder's pooled output; `g > 1`,
    /// its last feature map averaged over `g x g` cells (a ConvNet's last block, a ViT's patch
    /// tokens on their grid; the jigsaw and RotNet presets' 4, MAE's 7). The random-init
    /// baseline is read the same way.
    pub grid: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            monitor_every: 1,
            monitor_train: 10_000,
            monitor_test: 2_000,
            linear: true,
            baselines: true,
            grid: 1,
        }
    }
}

/// The shared sections, in the order a config file lists them.
const SHARED: [&str; 11] = [
    "method", "device", "devices", "data", "augment", "encoder", "train", "knn", "linear",
    "finetune", "eval",
];

impl Serialize for RunConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("method", &self.method)?;
        m.serialize_entry("device", &self.device)?;
        m.serialize_entry("devices", &self.devices)?;
        m.serialize_entry("data", &self.data)?;
        m.serialize_entry("augment", &self.augment)?;
        m.serialize_entry("encoder", &self.encoder)?;
        m.serialize_entry("train", &self.train)?;
        if !self.method.is_empty() {
            m.serialize_entry(&self.method, &self.settings)?;
        }
        m.serialize_entry("knn", &self.knn)?;
        m.serialize_entry("linear", &self.linear)?;
        m.serialize_entry("finetune", &self.finetune)?;
        m.serialize_entry("eval", &self.eval)?;
        m.end()
    }
}

/// A config file as written: its shared sections over [`RunConfig::base`], and its other
/// top-level tables (the method's, and perhaps other methods' from an older file), by name.
struct Parsed {
    cfg: RunConfig,
    tables: BTreeMap<String, toml::Table>,
}

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Parsed;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a run config")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Parsed, A::Error> {
                let mut cfg = RunConfig::base();
                let mut tables = BTreeMap::new();
                // Each shared value is read from the file's own deserializer, so a wrong key or
                // type inside it is reported at its line.
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "method" => cfg.method = map.next_value()?,
                        "device" => cfg.device = map.next_value()?,
                        "devices" => cfg.devices = map.next_value()?,
                        "data" => cfg.data = map.next_value()?,
                        "augment" => cfg.augment = map.next_value()?,
                        "encoder" => cfg.encoder = map.next_value()?,
                        "train" => cfg.train = map.next_value()?,
                        "knn" => cfg.knn = map.next_value()?,
                        "linear" => cfg.linear = map.next_value()?,
                        "finetune" => cfg.finetune = map.next_value()?,
                        "eval" => cfg.eval = map.next_value()?,
                        _ => match map.next_value::<toml::Value>()? {
                            toml::Value::Table(t) => {
                                tables.insert(key, t);
                            }
                            _ => return Err(de::Error::unknown_field(&key, &SHARED)),
                        },
                    }
                }
                Ok(Parsed { cfg, tables })
            }
        }
        d.deserialize_map(V)
    }
}

impl RunConfig {
    /// The starting point every built-in preset adjusts (its values are SimCLR's small-CPU
    /// recipe, which the other presets change where their method needs): a 32-wide ConvNet
    /// with the CIFAR stem, 15 epochs of 128 images, LARS at 0.6 with a one-epoch warm-up,
    /// SimCLR's augmentations with crops from 20 % of the image, on `flex`. No method.
    pub fn base() -> Self {
        let mut train = TrainConfig {
            epochs: 15,
            batch_size: 128,
            checkpoint_every: 100,
            ..TrainConfig::default()
        };
        train.optimizer.kind = OptimizerKind::Lars;
        train.optimizer.lr = 0.6;
        train.optimizer.weight_decay = 1e-5;
        train.optimizer.momentum = 0.9;
        train.optimizer.trust_coefficient = 0.02;
        train.schedule.warmup_epochs = 1.0;
        Self {
            method: String::new(),
            device: DeviceSpec::Flex,
            devices: Vec::new(),
            data: DataConfig::default(),
            augment: AugmentConfig {
                crop_min_scale: 0.2,
                ..AugmentConfig::simclr()
            },
            encoder: EncoderConfig {
                arch: Arch::Convnet,
                width: 32,
                cifar_stem: true,
                vit: VitConfig::default(),
                dcgan: DcganConfig::default(),
                init: String::new(),
            },
            train,
            settings: toml::Table::new(),
            knn: KnnConfig::default(),
            linear: LinearProbeConfig::default(),
            finetune: FinetuneConfig::default(),
            eval: EvalConfig::default(),
        }
    }

    /// [`RunConfig::base`] for method `name` with `settings` as its `[name]` table.
    pub fn for_method(name: &str, settings: &impl Serialize) -> Self {
        let mut c = Self::base();
        c.method = name.to_string();
        c.set_settings(settings);
        c
    }

    /// The method's settings as its typed config (`T`'s defaults for keys the table leaves
    /// out); a wrong key or type is an error naming `[method]`.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T> {
        self.settings
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| {
                Error::config(format!("[{}]", self.method), e.message().to_string())
            })
    }

    /// Replaces the method's settings with `settings` (a typed config).
    pub fn set_settings(&mut self, settings: &impl Serialize) {
        self.settings =
            toml::Table::try_from(settings).expect("a method's settings serialize to a table");
    }

    /// Changes the method's settings through their typed config `T`.
    pub fn edit_settings<T: DeserializeOwned + Serialize>(
        &mut self,
        edit: impl FnOnce(&mut T),
    ) -> Result<()> {
        let mut s: T = self.settings()?;
        edit(&mut s);
        self.set_settings(&s);
        Ok(())
    }

    /// Reads a config file: the keys it sets over the preset of its `method` (the registry's
    /// first method when it names none), checked by the method's recipe.
    pub fn load(path: &Path, registry: &Registry) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg = Self::parse(&text, &path.display().to_string(), registry)?;
        registry.get(&cfg.method)?.validate(&cfg)?;
        Ok(cfg)
    }

    /// Parses TOML text as the keys it sets over the preset of its `method` (a file that says
    /// `method = "mae"` and nothing about the encoder gets MAE's ViT). Unknown keys and wrong
    /// types are errors naming the line, from `origin`; a method the registry does not know
    /// is an error listing those it does.
    pub fn parse(text: &str, origin: &str, registry: &Registry) -> Result<Self> {
        let (mut given, tables) = Self::given(text, origin)?;
        let method = match given.get("method").and_then(toml::Value::as_str) {
            Some(m) => m.to_string(),
            None => registry.default_method()?.to_string(),
        };
        let recipe = registry.get(&method)?;
        given.insert("method".into(), toml::Value::String(method.clone()));
        let preset = recipe.preset();
        for name in tables.keys().filter(|n| **n != method) {
            if registry.get(name).is_ok() {
                // Files written before every method had its own table held them all.
                tracing::warn!(
                    "{origin}: [{name}] is left out: it holds the settings of method `{name}`, and this config is for `{method}`"
                );
                given.remove(name.as_str());
            } else {
                return Err(Error::config(
                    format!("{origin}: [{name}]"),
                    format!(
                        "unknown section: the shared ones are {}, and the method's own is [{method}]",
                        SHARED[1..].join(", ")
                    ),
                ));
            }
        }
        Self::over(preset, given, origin)
    }

    /// Reads the `config.toml` of a run folder: complete as `pretrain` wrote it, so no
    /// preset is needed (nor the recipe). Files of older versions (every method's table, or a
    /// `[custom]` one) keep working.
    pub fn load_saved(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse_saved(&text, &path.display().to_string())
    }

    /// [`RunConfig::load_saved`] of TOML text, from `origin`.
    pub fn parse_saved(text: &str, origin: &str) -> Result<Self> {
        let (mut given, tables) = Self::given(text, origin)?;
        let method = given
            .get("method")
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string();
        for name in tables.keys().filter(|n| **n != method) {
            given.remove(name.as_str());
        }
        let mut base = Self::base();
        base.method = method;
        Self::over(base, given, origin)
    }

    /// The file's keys as a table (checked against the shared sections' schema, with lines in
    /// the errors), and its other tables. An old `[custom]` table (name and settings of a
    /// crate's own method) becomes `method` and the method's table.
    fn given(text: &str, origin: &str) -> Result<(toml::Table, BTreeMap<String, toml::Table>)> {
        let mut parsed: Parsed = from_toml(text, origin)?;
        let mut given: toml::Table = from_toml(text, origin)?;
        if let Some(custom) = parsed.tables.remove("custom") {
            let name = custom
                .get("name")
                .and_then(toml::Value::as_str)
                .unwrap_or_default()
                .to_string();
            if name.is_empty() {
                return Err(Error::config(
                    format!("{origin}: [custom]"),
                    "a [custom] table is how older files named a crate's own method: write `method = \"NAME\"` and rename [custom.settings] to [NAME]",
                ));
            }
            tracing::warn!(
                "{origin}: [custom] is read as `method = \"{name}\"` with [custom.settings] as [{name}]; write it that way"
            );
            let settings = match custom.get("settings") {
                Some(toml::Value::Table(t)) => t.clone(),
                _ => toml::Table::new(),
            };
            given.remove("custom");
            given.insert("method".into(), toml::Value::String(name.clone()));
            given.insert(name.clone(), toml::Value::Table(settings.clone()));
            parsed.tables.insert(name, settings);
        }
        Ok((given, parsed.tables))
    }

    /// `given` (a checked file's keys) written over `base`.
    fn over(base: RunConfig, given: toml::Table, origin: &str) -> Result<Self> {
        let invalid = |e: toml::ser::Error| Error::Invalid(format!("{origin}: {e}"));
        let mut merged = toml::Table::try_from(&base).map_err(invalid)?;
        merge(&mut merged, given);
        let text = toml::to_string(&merged).map_err(invalid)?;
        let mut parsed: Parsed = from_toml(&text, origin)?;
        let method = parsed.cfg.method.clone();
        parsed.cfg.settings = parsed.tables.remove(&method).unwrap_or_default();
        Ok(parsed.cfg)
    }

    /// Sets `key` (dotted: `train.epochs`, `dino.teacher_temperature`) to `value` (TOML:
    /// `3`, `0.5`, `"adamw"`, `[0.5]`; a bare word is read as a string), as `--set` does.
    /// The key must exist; the value is checked with the rest by [`crate::Recipe::validate`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let field = format!("--set {key}");
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").expect("parsed the key v"),
            Err(_) => toml::Value::String(value.to_string()),
        };
        let mut table =
            toml::Table::try_from(&*self).map_err(|e| Error::config(&field, e.to_string()))?;
        let parts: Vec<&str> = key.split('.').collect();
        let (last, path) = parts.split_last().expect("split gives one part at least");
        let mut at = &mut table;
        for (i, p) in path.iter().enumerate() {
            at = match at.get_mut(*p) {
                Some(toml::Value::Table(t)) => t,
                _ => {
                    return Err(Error::config(
                        &field,
                        format!(
                            "no section `{}` in the config (see `selfsup config`)",
                            parts[..=i].join(".")
                        ),
                    ));
                }
            };
        }
        if key == "method" {
            return Err(Error::config(&field, "choose the method with --method"));
        }
        // A key the schema does not know is refused when the config is read back below (a
        // shared section's) or parsed by the recipe (the method's own).
        if let Some(toml::Value::Table(_)) = at.get(*last) {
            return Err(Error::config(
                &field,
                format!("`{key}` is a section: set one of its keys"),
            ));
        }
        at.insert(last.to_string(), parsed);
        let text = toml::to_string(&table).map_err(|e| Error::config(&field, e.to_string()))?;
        let mut parsed: Parsed = from_toml(&text, &field)?;
        let method = parsed.cfg.method.clone();
        parsed.cfg.settings = parsed.tables.remove(&method).unwrap_or_default();
        *self = parsed.cfg;
        Ok(())
    }

    /// The config as TOML with each key's doc line (from the configs' doc comments) as a
    /// comment above it: what `selfsup config` prints. `settings` is the schema of the
    /// method's typed settings ([`crate::Recipe::settings_schema`]); without it the method's
    /// table has no comments. The values are [`RunConfig::to_toml`]'s.
    pub fn to_commented_toml(&self, settings: Option<&schemars::Schema>) -> Result<String> {
        let text = self.to_toml()?;
        let shared = schemars::schema_for!(RunConfig);
        let mut out = String::new();
        let mut table: Vec<String> = Vec::new();
        for line in text.lines() {
            let path = if let Some(header) = line
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .filter(|h| !h.starts_with('['))
            {
                table = header.split('.').map(str::to_string).collect();
                Some(table.clone())
            } else {
                key_of(line).map(|k| {
                    let mut p = table.clone();
                    p.push(k.to_string());
                    p
                })
            };
            let doc = path.and_then(|p| match p.split_first() {
                Some((first, rest)) if *first == self.method => {
                    settings.and_then(|s| describe(s.as_value(), rest))
                }
                _ => describe(shared.as_value(), &p),
            });
            if let Some(doc) = doc {
                for l in wrap(&doc, 96) {
                    out += "# ";
                    out += &l;
                    out.push('\n');
                }
            }
            out += line;
            out.push('\n');
        }
        Ok(out)
    }

    /// Writes the config as TOML.
    pub fn save(&self, path: &Path) -> Result<()> {
        selfsup_core::atomic::write(path, self.to_toml()?)
    }

    /// The config as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        to_toml(self)
    }

    /// The devices a run trains on: `devices`, or `device` alone.
    pub fn train_devices(&self) -> Vec<DeviceSpec> {
        if self.devices.is_empty() {
            vec![self.device.clone()]
        } else {
            self.devices.clone()
        }
    }

    /// Checks the shared sections, naming the first field out of range. `shardable`: whether
    /// the method can split its batch over devices and run in mixed precision. A method's own
    /// checks are its recipe's ([`crate::Recipe::validate`], which calls this first).
    pub fn validate_shared(&self, shardable: bool) -> Result<()> {
        if self.method.is_empty() {
            return Err(Error::config("method", "name the method"));
        }
        self.data.validate()?;
        self.augment.validate("augment")?;
        self.encoder.validate()?;
        self.train.validate()?;
        self.validate_devices(shardable)?;
        if self.eval.grid == 0 {
            return Err(Error::config("eval.grid", "must be at least 1"));
        }
        self.knn.validate()?;
        self.linear.validate()?;
        self.finetune.validate()
    }

    fn validate_devices(&self, shardable: bool) -> Result<()> {
        if self.train.precision != Precision::F32 && !shardable {
            return Err(Error::config(
                "train.precision",
                format!(
                    "mixed precision runs methods whose objective is `Shardable`; {} trains in f32",
                    self.method
                ),
            ));
        }
        let Some(first) = self.devices.first() else {
            return Ok(());
        };
        if *first != self.device {
            return Err(Error::config(
                "devices",
                format!(
                    "the first device ({first}) must be `device` ({}), which holds the model",
                    self.device
                ),
            ));
        }
        let n = self.devices.len();
        if n > 1 && !shardable {
            return Err(Error::config(
                "devices",
                format!(
                    "{} trains on one device (its objective is not `Shardable`): leave `devices` empty",
                    self.method
                ),
            ));
        }
        self.train.check_batch(None, n)
    }

    /// Side of the square crops the encoder sees: `augment.crop_size`, or the images' own
    /// `height` when it is 0.
    pub fn crop_side(&self, height: usize) -> usize {
        if self.augment.crop_size == 0 {
            height
        } else {
            self.augment.crop_size
        }
    }

    /// Image channels of a saved run (its resolved normalization has one value per channel).
    pub fn channels(&self) -> usize {
        self.data.mean.len().max(1)
    }
}

/// The key of a `key = value` line of TOML, `None` for any other line (a header, a
/// continuation of a multi-line array, a blank).
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once(" = ")?;
    key.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        .then_some(key)
        .filter(|k| !k.is_empty())
}

/// The schema `node` stands for: through `$ref` (to the root's `$defs`), a one-entry `allOf`,
/// and the non-null entry of an `anyOf` / `oneOf` (an `Option`).
fn resolve<'a>(
    root: &'a serde_json::Value,
    mut node: &'a serde_json::Value,
) -> &'a serde_json::Value {
    for _ in 0..16 {
        if let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(def) => node = def,
                None => return node,
            }
        } else if let Some(all) = node
            .get("allOf")
            .and_then(|a| a.as_array())
            .filter(|a| a.len() == 1)
        {
            node = &all[0];
        } else if let Some(any) = node
            .get("anyOf")
            .or_else(|| node.get("oneOf"))
            .and_then(|a| a.as_array())
        {
            match any
                .iter()
                .find(|s| s.get("type").and_then(|t| t.as_str()) != Some("null"))
            {
                Some(s) => node = s,
                None => return node,
            }
        } else {
            return node;
        }
    }
    node
}

/// The doc line of `path` in `root`: the field's own description, else its type's.
fn describe(root: &serde_json::Value, path: &[String]) -> Option<String> {
    let mut node = root;
    for seg in path {
        node = resolve(root, node).get("properties")?.get(seg.as_str())?;
    }
    let text = node
        .get("description")
        .or_else(|| resolve(root, node).get("description"))?
        .as_str()?;
    // Rustdoc links read as plain code in a TOML comment.
    let plain = text.replace("[`", "`").replace("`]", "`");
    Some(plain.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `text` in lines of at most `width` characters (a longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line at least");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// Writes every key of `over` into `base`, recursing into tables both have.
pub(crate) fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
