//! [`Registry`]: the recipes a program knows, by name.

use crate::recipe::Recipe;
use selfsup_core::{Error, Result};

/// The methods a program can run: a list of [`Recipe`]s, looked up by name. The `selfsup`
/// binary's list is the one place that names the built-in methods; a crate of one's own makes
/// a registry of its recipe (and any others it wants beside it).
#[derive(Default)]
pub struct Registry {
    recipes: Vec<Box<dyn Recipe>>,
}

impl Registry {
    /// No recipes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `recipe` (after those already there: the order of `--help`, the bench table and
    /// the default method, the first).
    pub fn with(mut self, recipe: impl Recipe + 'static) -> Self {
        self.push(Box::new(recipe));
        self
    }

    /// Adds `recipe`; one of the same name is replaced.
    pub fn push(&mut self, recipe: Box<dyn Recipe>) {
        match self.recipes.iter().position(|r| r.name() == recipe.name()) {
            Some(i) => self.recipes[i] = recipe,
            None => self.recipes.push(recipe),
        }
    }

    /// The recipe named `name`; an error listing the known names otherwise.
    pub fn get(&self, name: &str) -> Result<&dyn Recipe> {
        self.recipes
            .iter()
            .find(|r| r.name() == name)
            .map(|r| r.as_ref())
            .ok_or_else(|| {
                Error::config(
                    "method",
                    format!(
                        "no method `{name}` here: choose from {} (a crate's own method runs with that crate's binary, docs/tutorial-custom-objective.md)",
                        self.names().join(", ")
                    ),
                )
            })
    }

    /// Every recipe, in order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Recipe> {
        self.recipes.iter().map(|r| r.as_ref())
    }

    /// Every recipe's name, in order.
    pub fn names(&self) -> Vec<&str> {
        self.recipes.iter().map(|r| r.name()).collect()
    }

    /// The method of a config that names none: the first recipe's.
    pub fn default_method(&self) -> Result<&str> {
        self.recipes
            .first()
            .map(|r| r.name())
            .ok_or_else(|| Error::config("method", "no method is registered"))
    }

    /// Position of `name` in the list (bench tables sort by it); `None` for an unknown one.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.recipes.iter().position(|r| r.name() == name)
    }
}
