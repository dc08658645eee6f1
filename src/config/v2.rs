// TEMPORARY STAND-IN (replaced by the v2 helper)
use super::decode::{ConfigError, LoadEnv};
use super::json5::Spanned;
use super::types::Config;
pub fn is_v2(_root: &Spanned) -> Result<bool, ConfigError> {
    Ok(false)
}
pub fn translate(
    _root: &Spanned,
    _env: &LoadEnv,
    _main: Option<&[String]>,
) -> Result<Config, Vec<ConfigError>> {
    Err(vec![])
}
pub fn convert(_root: &Spanned, _env: &LoadEnv) -> Result<String, Vec<ConfigError>> {
    Err(vec![])
}
