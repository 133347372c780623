//! The agent's seam to the one pipeline: the real [`Pipeline`] in the agent, a table of
//! answers in unit tests. The agent never builds a resolver, trust, proxy or credentials.

use futures::future::BoxFuture;

use crate::nodeconfig::NodeConfig;
use crate::pipeline::{CacheView, Checked, Creds, Pipeline, PipelineError};
use crate::probe::Depth;
use crate::reference::ImageRef;
use crate::runtime::Runtime;

/// What the agent asks of the node's pull path.
pub trait PullPath: Send + Sync {
    fn runtime(&self) -> Runtime;
    /// The runtime and release whose rules decide a path's state (verdict.rs).
    fn rules(&self) -> crate::runtime::RuntimeRules {
        self.runtime().into()
    }
    /// Identity of the endpoint list for `image` (one path check per distinct plan).
    fn plan_key(&self, image: &ImageRef) -> String;
    fn check<'a>(
        &'a self,
        image: &'a ImageRef,
        given: &'a str,
        creds: Creds<'a>,
        depth: Depth,
    ) -> BoxFuture<'a, Checked>;
    /// The node's loaded configuration (for `/status`); `None` in tests.
    fn node(&self) -> Option<&NodeConfig> {
        None
    }
    /// The same pull path re-read from the node's files; `None` = nothing to re-read.
    fn reload(&self) -> Option<Result<Pipeline, PipelineError>> {
        None
    }
    /// What its caches hold (for `/status`); `None` in tests.
    fn caches(&self) -> Option<CacheView> {
        None
    }
}

impl PullPath for Pipeline {
    fn runtime(&self) -> Runtime {
        Pipeline::runtime(self)
    }
    fn rules(&self) -> crate::runtime::RuntimeRules {
        Pipeline::rules(self)
    }
    fn plan_key(&self, image: &ImageRef) -> String {
        Pipeline::plan_key(self, image)
    }
    fn check<'a>(
        &'a self,
        image: &'a ImageRef,
        given: &'a str,
        creds: Creds<'a>,
        depth: Depth,
    ) -> BoxFuture<'a, Checked> {
        Box::pin(Pipeline::check(self, image, given, creds, depth))
    }
    fn node(&self) -> Option<&NodeConfig> {
        Pipeline::node(self)
    }
    fn reload(&self) -> Option<Result<Pipeline, PipelineError>> {
        Some(Pipeline::reload(self))
    }
    fn caches(&self) -> Option<CacheView> {
        Some(Pipeline::caches(self))
    }
}
