//! (in progress)
use crate::config::Config;
pub enum Outcome {
    Converged,
    SourceUnreachable(String),
    PodmanUnavailable(String),
}
impl Outcome {
    pub fn exit_code(&self) -> u8 {
        0
    }
    pub fn summary(&self) -> String {
        String::new()
    }
}
pub struct Agent {
    config: Config,
}
impl Agent {
    pub fn start(config: Config) -> Result<Agent, u8> {
        Ok(Agent { config })
    }
    pub fn reconcile(&mut self) -> Outcome {
        Outcome::Converged
    }
    pub fn reload(&mut self, c: Config) {
        self.config = c;
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
}
