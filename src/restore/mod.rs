//! The restore half of `rebox rebuild --restore-from-nas`: what the NAS holds ([`nas`]), the
//! data-loss window shown before anything changes ([`table`]), restoring the volumes through
//! Longhorn ([`longhorn`], waiting for its states with [`wait`]) and the final report
//! ([`report`]). The phases that use them live
//! with the other rebuild phases (`rebuild::from_nas`).

pub mod longhorn;
pub mod nas;
pub mod report;
pub mod table;
pub mod wait;
