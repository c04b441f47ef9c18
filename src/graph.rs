//! Dependency graph. (Placeholder.)
use crate::error::UnitError;
use crate::unit::{UnitSet, UnitSpec};

pub fn build(specs: Vec<UnitSpec>) -> Result<UnitSet, Vec<UnitError>> {
    let mut set = UnitSet::default();
    for s in specs {
        set.order.push(s.name.clone());
        set.units.insert(s.name.clone(), std::sync::Arc::new(s));
    }
    Ok(set)
}
