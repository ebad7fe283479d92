//! Explicit device choice: `flex`, `wgpu` or `cuda:N`, never burn's `Device::default()`.

use crate::error::{Error, Result};
use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A compute device named on the command line or in a config.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// burn's pure-Rust CPU backend; the default, always built.
    #[default]
    Flex,
    /// The `wgpu` backend (Vulkan, Metal, DirectX); needs the `wgpu` cargo feature.
    Wgpu,
    /// The CUDA GPU with this index; needs the `cuda` cargo feature.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "flex" | "cpu" => Ok(DeviceSpec::Flex),
            "wgpu" => Ok(DeviceSpec::Wgpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceSpec::Cuda).map_err(|_| {
                    Error::config(
                        "device",
                        format!("`{s}`: expected cuda:N with N a GPU index"),
                    )
                }),
                None => Err(Error::config(
                    "device",
                    format!("unknown device `{s}`; use flex, wgpu or cuda:N"),
                )),
            },
        }
    }
}

/// In a config: a string, `flex`, `wgpu`, `wgpu:N`, `cuda:N`.
impl schemars::JsonSchema for DeviceSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DeviceSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Flex => write!(f, "flex"),
            DeviceSpec::Wgpu => write!(f, "wgpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// The plain (inference) burn device, or an error saying which cargo feature to enable.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            DeviceSpec::Wgpu => Err(Error::Invalid(
                "device `wgpu` needs the `wgpu` cargo feature: rebuild with `--features wgpu`"
                    .into(),
            )),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => Ok(Device::cuda(*i)),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(Error::Invalid(
                "device `cuda:N` needs the `cuda` cargo feature: rebuild with `--features cuda` (see docs/backends.md)".into(),
            )),
        }
    }

    /// The same device with autodiff enabled, for training.
    pub fn train_device(&self) -> Result<Device> {
        Ok(self.device()?.autodiff())
    }

    /// The device the data-parallel tests run on: `SELFSUP_TEST_DEVICE` (`cuda:0`, `wgpu`),
    /// `flex` when it is unset. The tests that split a step over two copies of one device
    /// check the gather-with-gradients on whatever backend this names, so a GPU machine runs
    /// them with `SELFSUP_TEST_DEVICE=cuda:0 cargo test --features selfsup-core/cuda`.
    ///
    /// # Panics
    /// On a name that does not parse or a device whose feature is not built: a test run
    /// asked for a device it cannot have, which must not silently fall back to the CPU.
    pub fn for_tests() -> Device {
        match std::env::var("SELFSUP_TEST_DEVICE") {
            Ok(name) if !name.trim().is_empty() => name
                .parse::<DeviceSpec>()
                .and_then(|d| d.device())
                .unwrap_or_else(|e| panic!("SELFSUP_TEST_DEVICE={name}: {e}")),
            _ => Device::flex(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("flex".parse::<DeviceSpec>().unwrap(), DeviceSpec::Flex);
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("wgpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu);
        let err = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains("tpu") && err.contains("flex"), "{err}");
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn flex_is_always_available() {
        assert!(DeviceSpec::Flex.device().is_ok());
        assert!(DeviceSpec::Flex.train_device().unwrap().is_autodiff());
    }
}
