//! (in progress)
pub fn main(_opts: &[String], _config: Option<&std::path::Path>) -> u8 {
    2
}
