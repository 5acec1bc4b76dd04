//! Archive CSV → Avro bodies (twin of ``qryptify.binance.archive``'s CSV step).
use pyo3::prelude::*;

pub(crate) fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
