//! What a released stub declares, with its types: the rule that keeps an answer's types the
//! stub's.
//!
//! A check compares what an answer returns with what it should be: `ensure((var - 1.0).abs() <
//! tol, …)`, `EPOCHS > 50`, `ema.updates == 3`. The comparison is Rust's, so it is the answer's
//! types that decide what `<`, `-` or `==` do. An answer that returned a type of its own where
//! the stub says `f64` (`fn transition(…) -> (Fake, Fake)`, `let EPOCHS = Fake;`, a field
//! `updates: Fake`) could make `PartialOrd`, `Sub` or `PartialEq` say what it likes (Rust lets a
//! cell implement a standard trait between its own type and `f64`, `i64` or `&Tensor`), and a
//! check would pass for an answer that fails it. A method's name is guarded already (an answer
//! may not define a method the checks call that the stub does not, `names.rs`), but its types
//! were not. So an answer keeps what the stub declares, as the stub declares it:
//! - a function (`fn vp_alpha(f64) -> f64`): its generics, argument types, return type and
//!   `where` clause (argument names and patterns are free);
//! - a variable, constant or static the stub gives a type (`let BATCH_SIZE: i64`): the same
//!   type, written out (`let BATCH_SIZE = 128;` infers what the stub does not say);
//! - a struct, enum, union, trait or type alias: its header (kind, generics, `where` clause,
//!   supertraits, an alias's type); a struct's fields keep their types (more may be added);
//! - a method of an `impl` block or trait (`ScoreNet::new`, with `Self` read as the type):
//!   its signature as for a function; where the answer defines the stub's type, it defines each
//!   of the stub's methods in an inherent `impl` (else a `Deref` or a trait could answer the
//!   call), and a method of the same name in another `impl` of the type (or of a reference to
//!   it, a blanket `impl<T> … for T`, or a trait's default) has one of the stub's signatures for
//!   that name (a trait method taking `self` can come before an inherent one). An `impl` block
//!   with parameters or a `where` clause is part of its methods' signatures (an inherent method
//!   whose bounds never hold leaves the call to a trait's), and one for a type the answer
//!   renames (`type B = Ema;`) or writes without a name (`<Ema as Id>::T`) counts as one for
//!   any type;
//! - the words the declarations are written with (`f64`, `Tensor`, `nn`) keep naming what they
//!   name for the stub: the answer defines none of them, at its top level, below it (a module's
//!   `type f64 = Fake;` holds for an `impl` block written there) or as a generic parameter
//!   (`impl<f64> Ema`), unless the stub's declarations have that parameter too.
//!
//! A name the answer does not define is not its concern: the checks that read it do not compile
//! (and fail) unless another cell defines it, which `names.rs` guards. An answer defining a
//! declared name in a way this module cannot read (through a `use`) breaks the rule, and so does
//! a text whose brackets do not balance (evcxr may compile part of it); other text that does not
//! parse runs as it is, for the compiler to say what is wrong. Types are compared as written, token for token (`tch::Tensor` is not
//! `Tensor`, `&'a T` is not `&T`), which the finding shows side by side.
//!
//! The source's side of the rule (`Assignment::from_notebook`): a stub declares with its type
//! every variable the cells after it read, and the solution keeps the stub's declarations.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;
use std::collections::{BTreeMap, HashSet};
use syn::ext::IdentExt;

/// One thing an answer cell declares for the checks after it, with its type: an answer keeps
/// it as declared ([`FindingKind::Declaration`](super::FindingKind::Declaration)); the list of
/// a cell's is kept in the release's metadata ([`ReleasedCell::declares`](super::ReleasedCell::declares)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declaration {
    /// What is declared: `value:vp_alpha` (a function, variable, constant or static),
    /// `type:Ema` (a struct, enum, union, trait or type alias), `field:Ema.updates` (a
    /// struct's field), `method:ScoreNet::new` (a method of an `impl` block of that type, or of
    /// a trait of that name).
    pub name: String,
    /// Its declaration, tokens printed as Rust is usually written (`fn vp_alpha(f64) -> f64`,
    /// `BATCH_SIZE: i64`, `struct Ema`, `updates: u64`, `fn new(&nn::Path, i64) -> ScoreNet`).
    pub shape: String,
}

/// `tokens` printed as Rust is usually written: a space between two words, after a comma or a
/// lone `:`, around `->`, `=>`, `=`, `+` and `|`, none elsewhere (`&'a mut Vec<(f64, i64)>`).
/// The same tokens always print the same, whatever spacing they were written with.
fn print(tokens: TokenStream) -> String {
    let mut out = String::new();
    print_into(tokens, &mut out);
    out.trim().to_string()
}

fn print_into(tokens: TokenStream, out: &mut String) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    // Whether the previous tree was a word (an identifier or a literal), or a `'` (a lifetime's).
    let mut word = false;
    let mut k = 0;
    while k < trees.len() {
        match &trees[k] {
            TokenTree::Ident(i) => {
                if word {
                    out.push(' ');
                }
                out.push_str(&i.to_string());
                word = true;
            }
            TokenTree::Literal(l) => {
                if word {
                    out.push(' ');
                }
                out.push_str(&l.to_string());
                word = true;
            }
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => (" { ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                print_into(g.stream(), out);
                out.push_str(close);
                // `fn f() where`, `[T; 2] as`: a word after a group is another word.
                word = g.delimiter() != Delimiter::Brace;
            }
            TokenTree::Punct(_) => {
                // A run of joint punctuation is one operator (`::`, `->`, `=>`, `'` + a name).
                let mut op = String::new();
                while let Some(TokenTree::Punct(p)) = trees.get(k) {
                    // A lifetime's `'` starts a run of its own (`+'static`, `&'a`).
                    if p.as_char() == '\'' && !op.is_empty() {
                        break;
                    }
                    op.push(p.as_char());
                    k += 1;
                    if p.spacing() == Spacing::Alone || p.as_char() == '\'' {
                        break;
                    }
                }
                k -= 1;
                match op.as_str() {
                    "," | ";" => out.push_str(&format!("{op} ")),
                    ":" => out.push_str(": "),
                    "->" | "=>" | "=" | "+" | "|" => {
                        while out.ends_with(' ') {
                            out.pop();
                        }
                        out.push_str(&format!(" {op} "));
                    }
                    ">" | ">>" => {
                        out.push_str(&op);
                        // `impl<T> Foo`, `Vec<T> where`: the word after is another word.
                        word = true;
                        k += 1;
                        continue;
                    }
                    _ => {
                        if word && op == "&" {
                            out.push(' ');
                        }
                        out.push_str(&op);
                    }
                }
                word = false;
            }
        }
        k += 1;
    }
}

/// The words a declaration's types are written with: every identifier of `shape` but its
/// keywords and what it declares (a function's, a variable's, a field's or a type's own name).
fn type_words(shape: &str) -> Vec<String> {
    const KEYWORDS: [&str; 18] = [
        "fn", "self", "Self", "mut", "impl", "dyn", "where", "for", "struct", "enum", "union",
        "trait", "type", "const", "async", "unsafe", "extern", "crate",
    ];
    fn words(tokens: TokenStream, lifetime: &mut bool, out: &mut Vec<String>) {
        for tree in tokens {
            let after_quote = std::mem::replace(
                lifetime,
                matches!(&tree, TokenTree::Punct(p) if p.as_char() == '\''),
            );
            match tree {
                TokenTree::Ident(i) if !after_quote => out.push(i.to_string()),
                TokenTree::Group(g) => words(g.stream(), lifetime, out),
                _ => {}
            }
        }
    }
    let Ok(tokens) = shape.parse::<TokenStream>() else {
        return Vec::new();
    };
    // The declared name: the second token of `fn f…`, `struct S…`, the first of `x: T`.
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let skip = match trees.first() {
        Some(TokenTree::Ident(i)) if KEYWORDS.contains(&i.to_string().as_str()) => 2,
        _ => 1,
    };
    let mut out = Vec::new();
    for tree in trees.into_iter().skip(skip) {
        match tree {
            // A method under its bounded `impl` header (`impl<M: X> S<M> { fn loss(…) }`):
            // the signature's words, less the method's own name.
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                out.extend(type_words(&g.stream().to_string()))
            }
            other => words(other.into(), &mut false, &mut out),
        }
    }
    out.retain(|w| !KEYWORDS.contains(&w.as_str()));
    out
}

/// `tokens` with every `Self` replaced by `ty` (a method's signature read outside its `impl`).
fn self_as(tokens: TokenStream, ty: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|tree| match tree {
            TokenTree::Ident(i) if i == "Self" => ty.clone().into_iter().collect::<Vec<_>>(),
            TokenTree::Group(g) => {
                let mut inner = proc_macro2::Group::new(g.delimiter(), self_as(g.stream(), ty));
                inner.set_span(g.span());
                vec![TokenTree::Group(inner)]
            }
            other => vec![other],
        })
        .collect()
}

/// A function's or method's signature without argument names: `fn name<G>(T, U) -> R where …`.
fn signature(sig: &syn::Signature, self_ty: Option<&TokenStream>) -> String {
    let mut tokens = TokenStream::new();
    sig.constness.to_tokens(&mut tokens);
    sig.asyncness.to_tokens(&mut tokens);
    sig.unsafety.to_tokens(&mut tokens);
    sig.abi.to_tokens(&mut tokens);
    sig.fn_token.to_tokens(&mut tokens);
    sig.ident.unraw().to_tokens(&mut tokens);
    // Lifetimes are left out: they name no type (`fn f<'a>(&'a self)` is `fn f(&self)`).
    without_lifetime_params(&sig.generics).to_tokens(&mut tokens);
    let mut args = TokenStream::new();
    for (k, input) in sig.inputs.iter().enumerate() {
        if k > 0 {
            <syn::Token![,]>::default().to_tokens(&mut args);
        }
        match input {
            syn::FnArg::Receiver(r) => {
                // `self`, `&self`, `&mut self` however written (`&'a self`, `self: &Self`;
                // a `mut` binding of `self` is the body's), else `self: Box<Self>`.
                let ty = print(without_lifetimes(r.ty.to_token_stream()));
                match ty.as_str() {
                    "Self" => r.self_token.to_tokens(&mut args),
                    "&Self" | "&mut Self" => {
                        <syn::Token![&]>::default().to_tokens(&mut args);
                        if ty == "&mut Self" {
                            <syn::Token![mut]>::default().to_tokens(&mut args);
                        }
                        r.self_token.to_tokens(&mut args);
                    }
                    _ => {
                        r.self_token.to_tokens(&mut args);
                        <syn::Token![:]>::default().to_tokens(&mut args);
                        r.ty.to_tokens(&mut args);
                    }
                }
            }
            syn::FnArg::Typed(t) => t.ty.to_tokens(&mut args),
        }
    }
    if let Some(v) = &sig.variadic {
        v.dots.to_tokens(&mut args);
    }
    proc_macro2::Group::new(Delimiter::Parenthesis, args).to_tokens(&mut tokens);
    sig.output.to_tokens(&mut tokens);
    sig.generics.where_clause.to_tokens(&mut tokens);
    let tokens = without_lifetimes(tokens);
    print(match self_ty {
        Some(ty) => self_as(tokens, ty),
        None => tokens,
    })
}

/// `generics` without its lifetime parameters, which name no type (its `where` clause kept).
fn without_lifetime_params(generics: &syn::Generics) -> syn::Generics {
    let mut generics = generics.clone();
    generics.params = generics
        .params
        .into_iter()
        .filter(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
        .collect();
    generics
}

/// `tokens` without the lifetimes of references (`&'a T` is `&T`).
fn without_lifetimes(tokens: TokenStream) -> TokenStream {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = Vec::with_capacity(trees.len());
    let mut k = 0;
    while k < trees.len() {
        let tree = &trees[k];
        let reference = matches!(tree, TokenTree::Punct(p) if p.as_char() == '&');
        let lifetime = matches!(trees.get(k + 1), Some(TokenTree::Punct(p)) if p.as_char() == '\'')
            && matches!(trees.get(k + 2), Some(TokenTree::Ident(_)));
        out.push(match tree {
            TokenTree::Group(g) => {
                let mut inner =
                    proc_macro2::Group::new(g.delimiter(), without_lifetimes(g.stream()));
                inner.set_span(g.span());
                TokenTree::Group(inner)
            }
            // A `&` whose lifetime is left out stands alone (`&&T` is printed apart from `&& x`).
            TokenTree::Punct(_) if reference => {
                TokenTree::Punct(proc_macro2::Punct::new('&', Spacing::Alone))
            }
            other => other.clone(),
        });
        k += if reference && lifetime { 3 } else { 1 };
    }
    out.into_iter().collect()
}

/// Who owns a method: the base name of an `impl` block's type (`&T`, `&mut T` and `T<…>` all
/// `T`), with whether that type is a parameter of the `impl` itself (`impl<T> Tr for T`), or a
/// trait (its default methods).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// An `impl` block's type, by base name; `generic` where it is one of the block's
    /// parameters; `inherent` where the block implements no trait.
    Type {
        name: String,
        generic: bool,
        inherent: bool,
        /// Whether the type is a reference (`impl Tr for &T`).
        reference: bool,
    },
    /// A trait's default method.
    Trait(String),
}

impl Owner {
    fn name(&self) -> &str {
        match self {
            Owner::Type { name, .. } | Owner::Trait(name) => name,
        }
    }
}

/// A method found in a cell.
#[derive(Debug)]
struct Method {
    owner: Owner,
    name: String,
    shape: String,
    /// Whether it has a body (a trait's method may not).
    body: bool,
}

/// What a cell declares at its top level, with its types.
#[derive(Debug, Default)]
struct Declared {
    /// `value:` and `type:` names with the shape of each of their declarations (a name
    /// declared twice has two).
    items: BTreeMap<String, Vec<String>>,
    /// `Type.field` → the field's type, for the cell's structs.
    fields: BTreeMap<String, String>,
    /// The structs declared (their fields are in `fields`).
    structs: HashSet<String>,
    methods: Vec<Method>,
    /// The names it binds below its top level (in a module, a function's body, a block) and
    /// as generic parameters ([`inner_names`]).
    inner: HashSet<String>,
}

impl Declared {
    fn add(&mut self, name: String, shape: String) {
        self.items.entry(name).or_default().push(shape);
    }
}

/// The base name of a type: `T` for `T`, `&T`, `&mut T`, `m::T<U>`; `None` for a tuple, an
/// array, a `dyn` or `impl` type.
fn base_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Reference(r) => base_name(&r.elem),
        syn::Type::Paren(p) => base_name(&p.elem),
        syn::Type::Group(g) => base_name(&g.elem),
        syn::Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().map(|s| s.ident.unraw().to_string())
        }
        _ => None,
    }
}

/// The names `pat` binds, each with its type where `ty` (the `let`'s annotation) says it:
/// `let (a, b): (f64, i64)` gives `a: f64`, `b: i64`; an unannotated binding reads `a: _`.
fn let_bindings(pat: &syn::Pat, ty: Option<&syn::Type>, out: &mut Vec<(String, String)>) {
    let untyped = |pat: &syn::Pat, out: &mut Vec<(String, String)>| {
        let mut names = Vec::new();
        super::names::bound_names(pat, "value", &mut names);
        for name in names {
            let bare = name.trim_start_matches("value:").to_string();
            out.push((name, format!("{bare}: _")));
        }
    };
    match (pat, ty) {
        (syn::Pat::Type(t), None) => let_bindings(&t.pat, Some(&t.ty), out),
        (syn::Pat::Ident(i), Some(ty)) if i.subpat.is_none() && i.by_ref.is_none() => {
            let bare = i.ident.unraw().to_string();
            out.push((
                format!("value:{bare}"),
                format!("{bare}: {}", print(ty.to_token_stream())),
            ));
        }
        (syn::Pat::Paren(p), ty) => let_bindings(&p.pat, ty, out),
        (syn::Pat::Tuple(p), Some(syn::Type::Tuple(t))) if p.elems.len() == t.elems.len() => {
            for (pat, ty) in p.elems.iter().zip(&t.elems) {
                let_bindings(pat, Some(ty), out);
            }
        }
        // `let [a, b]: [f64; 2]`
        (syn::Pat::Slice(p), Some(syn::Type::Array(t))) => {
            for pat in &p.elems {
                if !matches!(pat, syn::Pat::Rest(_)) {
                    let_bindings(pat, Some(&t.elem), out);
                }
            }
        }
        (syn::Pat::Tuple(p), Some(syn::Type::Paren(t))) if p.elems.len() == 1 => {
            let_bindings(&p.elems[0], Some(&t.elem), out)
        }
        (pat, _) => untyped(pat, out),
    }
}

/// A struct's, enum's, union's or trait's header: its kind, name, generics, `where` clause and
/// (a trait's) supertraits.
fn header(kind: &str, ident: &syn::Ident, generics: &syn::Generics, extra: TokenStream) -> String {
    let mut tokens = TokenStream::new();
    tokens.extend(std::iter::once(TokenTree::Ident(proc_macro2::Ident::new(
        kind,
        proc_macro2::Span::call_site(),
    ))));
    ident.unraw().to_tokens(&mut tokens);
    generics.to_tokens(&mut tokens);
    tokens.extend(extra);
    generics.where_clause.to_tokens(&mut tokens);
    print(tokens)
}

/// Names a cell binds out of its top level's sight, and the types it renames.
#[derive(Default)]
struct Inner {
    /// Items below the top level (in a module, a function's body or a block), what `use` items
    /// there bring, and every generic parameter: each names, where it is in scope, what the
    /// same word names in the stub's declarations (`mod m { type f64 = Fake; impl super::Ema
    /// { fn current_momentum(&self) -> f64 … } }`, `impl<f64> Ema`).
    bound: HashSet<String>,
    /// The type aliases and `use … as` names, at any depth.
    renamed: HashSet<String>,
}

/// [`Inner`] of a cell's `block`.
fn inner_names(block: &syn::Block) -> Inner {
    use syn::visit::Visit;
    let mut inner = Inner::default();
    for stmt in &block.stmts {
        match stmt {
            // A top-level item's own name is `names::defined`'s; what it holds is below.
            syn::Stmt::Item(item) => syn::visit::visit_item(&mut inner, item),
            other => inner.visit_stmt(other),
        }
    }
    inner
}

impl<'ast> syn::visit::Visit<'ast> for Inner {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let ident = match item {
            syn::Item::Const(i) => Some(&i.ident),
            syn::Item::Enum(i) => Some(&i.ident),
            syn::Item::Fn(i) => Some(&i.sig.ident),
            syn::Item::Mod(i) => Some(&i.ident),
            syn::Item::Static(i) => Some(&i.ident),
            syn::Item::Struct(i) => Some(&i.ident),
            syn::Item::Trait(i) => Some(&i.ident),
            syn::Item::TraitAlias(i) => Some(&i.ident),
            syn::Item::Type(i) => Some(&i.ident),
            syn::Item::Union(i) => Some(&i.ident),
            _ => None,
        };
        self.bound.extend(ident.map(|i| i.unraw().to_string()));
        if let syn::Item::Use(u) = item {
            let mut names = Vec::new();
            use_tree_names(&u.tree, &mut names);
            self.bound.extend(names);
        }
        syn::visit::visit_item(self, item);
    }
    fn visit_item_type(&mut self, t: &'ast syn::ItemType) {
        self.renamed.insert(t.ident.unraw().to_string());
        syn::visit::visit_item_type(self, t);
    }
    fn visit_use_rename(&mut self, r: &'ast syn::UseRename) {
        self.renamed.insert(r.rename.unraw().to_string());
    }
    fn visit_type_param(&mut self, p: &'ast syn::TypeParam) {
        self.bound.insert(p.ident.unraw().to_string());
        syn::visit::visit_type_param(self, p);
    }
    fn visit_const_param(&mut self, p: &'ast syn::ConstParam) {
        self.bound.insert(p.ident.unraw().to_string());
        syn::visit::visit_const_param(self, p);
    }
}

/// The names a `use` tree brings: each path's last segment, or its new name.
fn use_tree_names(tree: &syn::UseTree, out: &mut Vec<String>) {
    match tree {
        syn::UseTree::Path(p) => use_tree_names(&p.tree, out),
        syn::UseTree::Name(n) => out.push(n.ident.unraw().to_string()),
        syn::UseTree::Rename(r) => out.push(r.rename.unraw().to_string()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_tree_names(t, out)),
        syn::UseTree::Glob(_) => {}
    }
}

/// The generic parameters the stub's declarations write (`M` of `struct S<M: nn::Module>`):
/// an answer writes them too.
fn declared_params(declared_by_stub: &[Declaration]) -> HashSet<String> {
    use syn::parse::Parser;
    let mut out = HashSet::new();
    for d in declared_by_stub {
        let Ok(tokens) = d.shape.parse::<TokenStream>() else {
            continue;
        };
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (k, tree) in trees.iter().enumerate() {
            let TokenTree::Ident(word) = tree else {
                continue;
            };
            let after = match word.to_string().as_str() {
                "impl" if k == 0 => k + 1,
                "fn" | "struct" | "enum" | "union" | "trait" | "type" => k + 2,
                _ => continue,
            };
            let rest: TokenStream = trees.iter().skip(after).cloned().collect();
            let generics = |input: syn::parse::ParseStream| {
                let g: syn::Generics = input.parse()?;
                input.parse::<TokenStream>()?;
                Ok(g)
            };
            if let Ok(g) = generics.parse2(rest) {
                for p in g.type_params() {
                    out.insert(p.ident.unraw().to_string());
                }
                for p in g.const_params() {
                    out.insert(p.ident.unraw().to_string());
                }
            }
        }
    }
    out
}

/// What `code` declares at its top level; `None` where it does not parse.
fn declared(code: &str) -> Option<Declared> {
    let block = super::names::parse(code)?;
    let mut out = Declared::default();
    for stmt in &block.stmts {
        match stmt {
            syn::Stmt::Local(local) => {
                let mut binds = Vec::new();
                let_bindings(&local.pat, None, &mut binds);
                for (name, shape) in binds {
                    out.add(name, shape);
                }
            }
            syn::Stmt::Item(item) => item_declared(item, &mut out),
            _ => {}
        }
    }
    let inner = inner_names(&block);
    super::names::each_method(&block, |site, sig, body| {
        out.methods.extend(method(site, sig, body, &inner.renamed));
    });
    out.inner = inner.bound;
    Some(out)
}

fn item_declared(item: &syn::Item, out: &mut Declared) {
    let typed = |ident: &syn::Ident, ty: &syn::Type| {
        let bare = ident.unraw().to_string();
        (
            format!("value:{bare}"),
            format!("{bare}: {}", print(ty.to_token_stream())),
        )
    };
    match item {
        syn::Item::Fn(f) => out.add(
            format!("value:{}", f.sig.ident.unraw()),
            signature(&f.sig, None),
        ),
        syn::Item::Const(c) => {
            let (name, shape) = typed(&c.ident, &c.ty);
            out.add(name, shape);
        }
        syn::Item::Static(s) => {
            let (name, shape) = typed(&s.ident, &s.ty);
            out.add(name, shape);
        }
        syn::Item::Struct(s) => {
            let name = s.ident.unraw().to_string();
            let shape = header("struct", &s.ident, &s.generics, TokenStream::new());
            out.add(format!("type:{name}"), shape.clone());
            if !matches!(s.fields, syn::Fields::Named(_)) {
                // A tuple or unit struct is also a value: its constructor.
                out.add(format!("value:{name}"), shape);
            }
            for (k, field) in s.fields.iter().enumerate() {
                let field_name = field
                    .ident
                    .as_ref()
                    .map_or(k.to_string(), |i| i.unraw().to_string());
                out.fields.insert(
                    format!("{name}.{field_name}"),
                    format!("{field_name}: {}", print(field.ty.to_token_stream())),
                );
            }
            out.structs.insert(name);
        }
        syn::Item::Enum(e) => {
            let mut variants = TokenStream::new();
            for v in &e.variants {
                v.ident.unraw().to_tokens(&mut variants);
                v.fields.to_tokens(&mut variants);
                <syn::Token![,]>::default().to_tokens(&mut variants);
            }
            let body = proc_macro2::Group::new(Delimiter::Brace, variants).into_token_stream();
            out.add(
                format!("type:{}", e.ident.unraw()),
                header("enum", &e.ident, &e.generics, body),
            );
        }
        syn::Item::Union(u) => out.add(
            format!("type:{}", u.ident.unraw()),
            header("union", &u.ident, &u.generics, u.fields.to_token_stream()),
        ),
        syn::Item::Type(t) => {
            let mut tokens = TokenStream::new();
            t.eq_token.to_tokens(&mut tokens);
            t.ty.to_tokens(&mut tokens);
            out.add(
                format!("type:{}", t.ident.unraw()),
                header("type", &t.ident, &t.generics, tokens),
            );
        }
        syn::Item::Trait(t) => {
            let mut bounds = TokenStream::new();
            if !t.supertraits.is_empty() {
                t.colon_token.to_tokens(&mut bounds);
                t.supertraits.to_tokens(&mut bounds);
            }
            let name = t.ident.unraw().to_string();
            out.add(
                format!("type:{name}"),
                header("trait", &t.ident, &t.generics, bounds),
            );
        }
        _ => {}
    }
}

/// A method of the cell, with who owns it (`names::each_method`: at any depth). `renamed`: the
/// types the cell renames (`type B = Block;`, `use Block as B;`).
fn method(
    site: super::names::MethodSite,
    sig: &syn::Signature,
    body: bool,
    renamed: &HashSet<String>,
) -> Option<Method> {
    let (owner, self_ty, header) = match site {
        super::names::MethodSite::Trait(t) => {
            let mut tokens = TokenStream::new();
            t.trait_token.to_tokens(&mut tokens);
            t.ident.unraw().to_tokens(&mut tokens);
            (
                Owner::Trait(t.ident.unraw().to_string()),
                None,
                bounded(tokens, &t.generics, TokenStream::new()),
            )
        }
        super::names::MethodSite::Impl(i) => {
            // A type the cell renames, or one without a base name (`<X as Tr>::T`, a macro),
            // may be any type, a stub's too (`type B = Block; impl Tr for B`).
            let base = base_name(&i.self_ty).filter(|n| !renamed.contains(n));
            let name = base
                .clone()
                .unwrap_or_else(|| print(i.self_ty.to_token_stream()));
            let owner = Owner::Type {
                generic: base.is_none()
                    || i.generics.type_params().any(|p| p.ident.unraw() == name),
                name,
                inherent: i.trait_.is_none(),
                reference: matches!(*i.self_ty, syn::Type::Reference(_)),
            };
            let mut tokens = TokenStream::new();
            if let Some((bang, path, for_token)) = &i.trait_ {
                bang.to_tokens(&mut tokens);
                path.to_tokens(&mut tokens);
                for_token.to_tokens(&mut tokens);
            }
            i.self_ty.to_tokens(&mut tokens);
            let mut head = TokenStream::new();
            i.impl_token.to_tokens(&mut head);
            (
                owner,
                Some(i.self_ty.to_token_stream()),
                bounded(head, &i.generics, tokens),
            )
        }
    };
    let shape = signature(sig, self_ty.as_ref());
    Some(Method {
        owner,
        name: sig.ident.unraw().to_string(),
        shape: match header {
            Some(header) => format!("{header} {{ {shape} }}"),
            None => shape,
        },
        body,
    })
}

/// The header of an `impl` block or trait (`head`, its `generics`, then `rest`) where it has
/// type or const parameters or a `where` clause (`impl<M: nn::Module> S<M>`, `impl<T>
/// ScoreNet where ScoreNet: Ready<Out = T>`), which its methods' shapes then start with: its
/// methods apply only where its bounds hold (an inherent method whose bounds never hold leaves
/// the call to a trait's), and its parameters can take the names the signatures are written
/// with (`impl<f64> Ema`). `None` for a plain header (`impl Ema`, `impl<'a> Tr for Ema`).
fn bounded(head: TokenStream, generics: &syn::Generics, rest: TokenStream) -> Option<String> {
    let generics = without_lifetime_params(generics);
    if generics.params.is_empty() && generics.where_clause.is_none() {
        return None;
    }
    let mut tokens = head;
    generics.to_tokens(&mut tokens);
    tokens.extend(rest);
    generics.where_clause.to_tokens(&mut tokens);
    Some(print(without_lifetimes(tokens)))
}

/// The receiver of a method's `shape` (`self`, `&self`, `&mut self`), if it has one of these.
fn receiver(shape: &str) -> Option<&str> {
    let args = shape.split_once('(')?.1;
    let first = args.split([',', ')']).next()?.trim();
    ["self", "&self", "&mut self"]
        .into_iter()
        .find(|r| *r == first)
}

/// What a stub declares: every name with its type. A trait's methods are declared whether or
/// not they have a default; an `impl` block's under its type's base name.
pub(super) fn declarations(stub: &str) -> Option<Vec<Declaration>> {
    let d = declared(stub)?;
    let mut out = Vec::new();
    for (name, shapes) in &d.items {
        // A variable bound without a type declares none (the source may not leave one that
        // the cells after it read so, `untyped_variables`).
        for shape in shapes.iter().filter(|s| !s.ends_with(": _")) {
            out.push(Declaration {
                name: name.clone(),
                shape: shape.clone(),
            });
        }
    }
    for (name, shape) in &d.fields {
        out.push(Declaration {
            name: format!("field:{name}"),
            shape: shape.clone(),
        });
    }
    for m in &d.methods {
        out.push(Declaration {
            name: format!("method:{}::{}", m.owner.name(), m.name),
            shape: m.shape.clone(),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.shape).cmp(&(&b.name, &b.shape)));
    out.dedup();
    Some(out)
}

/// What an answer cell declares for the checks: what its `stub` declares, and what its
/// `solution` declares of the names the cells after it read that the stub does not define
/// (`extra`, from `names.rs`: a name the stub leaves to the student, which the markdown asks
/// for). A struct's fields and methods come with it, a method with its name. `None` where the
/// stub or (with `extra` names) the solution does not parse.
pub(super) fn declarations_for(
    stub: &str,
    solution: &str,
    extra: &[String],
) -> Option<Vec<Declaration>> {
    let mut out = declarations(stub)?;
    if extra.is_empty() {
        return Some(out);
    }
    let has = |name: &str| extra.iter().any(|e| e == name);
    for d in declarations(solution)? {
        let (kind, bare) = d.name.split_once(':').unwrap_or(("", &d.name));
        let keep = match kind {
            "field" => has(&format!(
                "type:{}",
                bare.split_once('.').map_or(bare, |(t, _)| t)
            )),
            "method" => {
                let (ty, method) = bare.split_once("::").unwrap_or((bare, ""));
                has(&format!("type:{ty}")) || has(&format!("method:{method}"))
            }
            _ => has(&d.name),
        };
        if keep {
            out.push(d);
        }
    }
    out.sort_by(|a, b| (&a.name, &a.shape).cmp(&(&b.name, &b.shape)));
    out.dedup();
    Some(out)
}

/// The variables `stub` binds without saying their types (`let EPS = f(…);`), by name
/// (`value:EPS`): an answer could bind them to a value of a type of its own.
pub(super) fn untyped_variables(stub: &str) -> Vec<String> {
    declared(stub)
        .map(|d| {
            d.items
                .iter()
                .filter(|(_, shapes)| shapes.iter().any(|s| s.ends_with(": _")))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Where `answer` breaks the stub's declarations `declared` (see the [module docs](self)), each
/// in words; empty where it keeps them.
pub(super) fn changed(answer: &str, declared_by_stub: &[Declaration]) -> Vec<String> {
    if declared_by_stub.is_empty() {
        return Vec::new();
    }
    let Some(theirs) = declared(answer) else {
        // Tokens that do not parse: the kernel cannot compile them either, and the student
        // sees the compiler's error. A text that does not even lex (brackets that do not
        // balance) evcxr may compile in part (`reach.rs`), so what it declares is unknown.
        let lexes = super::names::without_commands(answer)
            .parse::<TokenStream>()
            .is_ok();
        return match lexes {
            true => Vec::new(),
            false => vec![
                "is not Rust whose brackets balance, so what it declares cannot be read \
                 (the kernel may compile part of such a text)"
                    .into(),
            ],
        };
    };
    let defined = super::names::defined(answer)
        .map(|d| d.names)
        .unwrap_or_default();
    let mut why = Vec::new();
    let mut pinned: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in declared_by_stub {
        pinned.entry(&d.name).or_default().push(&d.shape);
    }
    let stub_types: Vec<&str> = pinned
        .keys()
        .filter_map(|n| n.strip_prefix("type:"))
        .collect();
    for (name, shapes) in &pinned {
        let (kind, bare) = name.split_once(':').unwrap_or(("", name));
        match kind {
            "value" | "type" if defined.iter().any(|n| n == name) => {
                let found = theirs.items.get(*name).map_or(&[][..], Vec::as_slice);
                if found.is_empty() {
                    why.push(format!(
                        "declares `{bare}` in a way the grader cannot read (a `use`?) where the stub has `{}`",
                        shapes[0]
                    ));
                }
                for shape in found {
                    if !shapes.contains(&shape.as_str()) {
                        why.push(format!(
                            "declares `{shape}` where the stub has `{}`",
                            shapes[0]
                        ));
                    }
                }
            }
            "field" => {
                let ty = bare.split_once('.').map_or(bare, |(ty, _)| ty);
                if theirs.structs.contains(ty) {
                    match theirs.fields.get(bare) {
                        Some(shape) if !shapes.contains(&shape.as_str()) => why.push(format!(
                            "gives `{ty}` the field `{shape}` where the stub has `{}`",
                            shapes[0]
                        )),
                        None => why.push(format!("leaves out `{ty}`'s field `{}`", shapes[0])),
                        _ => {}
                    }
                }
            }
            "method" => {
                let (ty, method) = bare.split_once("::").unwrap_or((bare, ""));
                let inherent = theirs.methods.iter().any(|m| {
                    m.name == method
                        && matches!(&m.owner, Owner::Type { name, inherent: true, .. } if name == ty)
                });
                if stub_types.contains(&ty) && theirs.structs.contains(ty) && !inherent {
                    why.push(format!(
                        "declares `{ty}` without the method `{}` of its `impl` block",
                        shapes[0]
                    ));
                }
            }
            _ => {}
        }
    }
    // A name the declarations' types are written with (`f64`, `Tensor`, `nn`, `Vec`), defined
    // by the answer: the same tokens would then name its own type (`type f64 = Fake;`).
    let written_with: std::collections::BTreeSet<String> = declared_by_stub
        .iter()
        .flat_map(|d| type_words(&d.shape))
        .collect();
    let mut shadowed = std::collections::BTreeSet::new();
    for name in &defined {
        let Some(("type" | "value", bare)) = name.split_once(':') else {
            continue;
        };
        if written_with.contains(bare) && !pinned.contains_key(name.as_str()) {
            shadowed.insert(bare);
        }
    }
    // Below the top level, or as a generic parameter, it names the answer's own where it is
    // in scope: an `impl` block there is read with it.
    let params = declared_params(declared_by_stub);
    for bare in &theirs.inner {
        if written_with.contains(bare) && !params.contains(bare) {
            shadowed.insert(bare);
        }
    }
    for bare in shadowed {
        why.push(format!(
            "defines `{bare}`, a name the stub's declarations are written with (they would name \
             the answer's own)"
        ));
    }
    // Every method the answer defines with a name the stub declares, where a call on the stub's
    // types could reach it.
    for m in &theirs.methods {
        let own = format!("method:{}::{}", m.owner.name(), m.name);
        // A trait's method on the stub's type itself with the receiver of the stub's method
        // (`impl nn::Module for Block { fn forward(&self, …) }` beside `Block::forward(&self,
        // …)`): Rust tries the inherent one first at that receiver, and no earlier one is new.
        if let (
            Owner::Type {
                inherent: false,
                reference: false,
                generic: false,
                ..
            },
            Some(shapes),
        ) = (&m.owner, pinned.get(own.as_str()))
        {
            let theirs = receiver(&m.shape);
            if theirs.is_some() && shapes.iter().all(|s| receiver(s) == theirs) {
                continue;
            }
        }
        let allowed: Vec<&str> = match pinned.get(own.as_str()) {
            Some(shapes) => shapes.clone(),
            None => {
                // A trait's method without a default is reached only through an `impl`.
                let reachable = match &m.owner {
                    Owner::Type { name, generic, .. } => {
                        *generic || stub_types.contains(&name.as_str())
                    }
                    Owner::Trait(_) => m.body,
                };
                if !reachable {
                    continue;
                }
                let suffix = format!("::{}", m.name);
                pinned
                    .iter()
                    .filter(|(n, _)| n.starts_with("method:") && n.ends_with(&suffix))
                    .flat_map(|(_, shapes)| shapes.iter().copied())
                    .collect()
            }
        };
        if allowed.is_empty() || allowed.contains(&m.shape.as_str()) {
            continue;
        }
        why.push(format!(
            "declares the method `{}` ({}) where the stub has `{}`",
            m.shape,
            match &m.owner {
                Owner::Type { name, .. } => format!("for `{name}`"),
                Owner::Trait(name) => format!("of the trait `{name}`"),
            },
            allowed[0]
        ));
    }
    why.sort();
    why.dedup();
    why
}

#[cfg(test)]
mod tests {
    use super::{changed, declarations, declarations_for, print, untyped_variables};

    fn shapes(code: &str) -> Vec<String> {
        declarations(code)
            .unwrap()
            .into_iter()
            .map(|d| format!("{} = {}", d.name, d.shape))
            .collect()
    }

    #[test]
    fn declarations_print_the_same_whatever_the_spacing() {
        for (a, b) in [
            ("&'a  mut Vec<( f64,i64 )>", "&'a mut Vec<(f64, i64)>"),
            (
                "impl Fn(&Tensor)->Tensor+'static",
                "impl Fn(&Tensor) -> Tensor + 'static",
            ),
            ("[f64;3]", "[f64; 3]"),
            ("Vec<Vec<T>>", "Vec<Vec<T>>"),
        ] {
            let tokens: proc_macro2::TokenStream = a.parse().unwrap();
            assert_eq!(print(tokens), b);
        }
        let stub = "fn f<T: Into<f64>>(mut x: T, (a, b): (i64, i64)) -> f64 where T: Copy { todo!() }\n\
                    let N: i64 = todo!();\nlet (a, b): (f64, Tensor) = todo!();\nlet free = 3;\n\
                    const C: usize = 2;\nstruct S<M: nn::Module> { m: M, pub sigma: f64 }\n\
                    impl<M: nn::Module> S<M> { fn new(m: M) -> Self { todo!() } fn go(&mut self, x: &Tensor) {} }\n\
                    trait Tr: Clone { fn get(self) -> f64; }";
        assert_eq!(
            shapes(stub),
            [
                "field:S.m = m: M",
                "field:S.sigma = sigma: f64",
                "method:S::go = impl<M: nn::Module> S<M> { fn go(&mut self, &Tensor) }",
                "method:S::new = impl<M: nn::Module> S<M> { fn new(M) -> S<M> }",
                "method:Tr::get = fn get(self) -> f64",
                "type:S = struct S<M: nn::Module>",
                "type:Tr = trait Tr: Clone",
                "value:C = C: usize",
                "value:N = N: i64",
                "value:a = a: f64",
                "value:b = b: Tensor",
                "value:f = fn f<T: Into<f64>>(T, (i64, i64)) -> f64 where T: Copy",
            ]
        );
        assert_eq!(untyped_variables(stub), ["value:free"]);
    }

    const STUB: &str = "fn f(x: f64) -> f64 { todo!() }\nlet N: i64 = todo!();\nlet s: nn::Sequential = todo!();\n\
                        struct Ema { updates: u64, averages: Vec<Tensor> }\n\
                        impl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) { todo!() } }";

    fn why(answer: &str) -> Vec<String> {
        changed(answer, &declarations(STUB).unwrap())
    }

    const EMA: &str = "struct Ema { updates: u64, averages: Vec<Tensor> }\n\
                       impl Ema { fn new(momentum: f64) -> Ema { todo!() } fn update(&mut self) {} }";

    #[test]
    fn an_answer_may_write_its_own_code_within_the_stubs_declarations() {
        for answer in [
            // Other argument names and patterns, `Ema` for `Self`, a constant for a variable,
            // a field and a helper added, a helper type with its own `new`.
            format!("fn f(mut y: f64) -> f64 {{ y *= 2.0; y }}\nconst N: i64 = 3;\n{EMA}"),
            "fn f(x: f64) -> f64 { h(x) }\nfn h(x: f64) -> f64 { x }\nlet N: i64 = 3;\n\
             struct Ema { updates: u64, averages: Vec<Tensor>, extra: f64 }\n\
             impl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) {} fn more(&self) {} }\n\
             struct Helper;\nimpl Helper { fn new() -> Self { Helper } }"
                .to_string(),
            // Names the answer leaves out: the checks that read them do not compile.
            "let N: i64 = 3;".into(),
            // Variables named like a field or an argument; a crate's module under its own name.
            "let updates = 3;\nlet m = 2.0;\nuse tch::nn;\nlet s: nn::Sequential = nn::seq();".into(),
            // An array pattern; `self` and lifetimes written out; a trait's `update` on `Ema`
            // with the receiver of `Ema::update` (the inherent one comes first).
            "let [N, M]: [i64; 2] = [1, 2];".into(),
            "struct Ema { updates: u64, averages: Vec<Tensor> }\n\
             impl Ema { fn new<'a>(m: f64) -> Ema { todo!() } fn update(self: &mut Self) {} }\n\
             trait Step { fn update(&mut self); }\nimpl Step for Ema { fn update(&mut self) {} }"
                .into(),
            // A generic helper, and a nested helper with its own names.
            "fn f(x: f64) -> f64 { g(x) }\nfn g<T: Into<f64>>(x: T) -> f64 { x.into() }\nfn h() { fn inner(k: usize) -> usize { k } }".into(),
            // A trait of its own whose `update` has the stub's signature, and without a default.
            format!("{EMA}\nfn f(x: f64) -> f64 {{ x }}\ntrait Step {{ fn update(&mut self); fn new(m: f64) -> Ema {{ todo!() }} }}"),
        ] {
            assert_eq!(why(&answer), Vec::<String>::new(), "{answer}");
        }
    }

    #[test]
    fn an_answer_that_changes_a_declared_type_is_found() {
        for (answer, expect) in [
            ("fn f(x: f64) -> Fake { Fake }", "declares `fn f(f64) -> Fake` where the stub has `fn f(f64) -> f64`"),
            ("fn f(x: f32) -> f64 { 0.0 }", "`fn f(f32) -> f64`"),
            ("fn f<T>(x: T) -> f64 { 0.0 }", "`fn f<T>(T) -> f64`"),
            ("let N = 3;", "declares `N: _` where the stub has `N: i64`"),
            ("let N: Fake = Fake;", "`N: Fake`"),
            ("let f = |x: f64| x;", "declares `f: _`"),
            ("mod m { pub fn f(x: f64) -> f64 { x } }\nuse m::f;", "declares `f` in a way the grader cannot read"),
            ("fn f(x: f64) -> f64 { x }\nfn f(x: f64) -> Fake { Fake }", "`fn f(f64) -> Fake`"),
            (
                "struct Ema { updates: Fake, averages: Vec<Tensor> }\nimpl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) {} }",
                "gives `Ema` the field `updates: Fake` where the stub has `updates: u64`",
            ),
            (
                "struct Ema { averages: Vec<Tensor> }\nimpl Ema { fn new(m: f64) -> Self { todo!() } fn update(&mut self) {} }",
                "leaves out `Ema`'s field `updates: u64`",
            ),
            ("struct Ema<T> { updates: u64, averages: Vec<Tensor>, t: T }", "declares `struct Ema<T>` where the stub has `struct Ema`"),
            ("type Ema = Fake;", "`type Ema = Fake`"),
            // Without its inherent `new`, `Ema::new` or `ema.update()` could reach a trait's or
            // a `Deref` target's.
            (
                "struct Ema { updates: u64, averages: Vec<Tensor> }\nimpl Ema { fn update(&mut self) {} }",
                "declares `Ema` without the method `fn new(f64) -> Ema`",
            ),
            (&format!("{EMA}\nimpl Ema {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `Ema`) where the stub has `fn update(&mut self)`"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake; }}\nimpl T for &mut Ema {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `Ema`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (of the trait `T`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake; }}\nimpl<X> T for X {{ fn update(self) -> Fake {{ Fake }} }}"), "`impl<X> T for X { fn update(self) -> Fake }` (for `X`)"),
            ("fn f(x: f64) -> f64 { x", "is not Rust whose brackets balance"),
            // A trait method taking `self` comes before `&mut self` and a module hides nothing:
            // an `impl` applies wherever it is written.
            (&format!("{EMA}\nmod t {{ pub trait T {{ fn update(self) -> f32; }}\n  impl T for super::Ema {{ fn update(self) -> f32 {{ 0.1 }} }} }}\nuse t::T as _;"), "`fn update(self) -> f32` (for `Ema`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> f32; }}\nfn g() {{ impl T for Ema {{ fn update(self) -> f32 {{ 0.1 }} }} }}"), "`fn update(self) -> f32` (for `Ema`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> f32; }}\nconst _: () = {{ impl T for Ema {{ fn update(self) -> f32 {{ 0.1 }} }} }};"), "`fn update(self) -> f32` (for `Ema`)"),
            // The same tokens naming the answer's own types.
            ("type f64 = Fake;\nfn f(x: f64) -> f64 { x }", "defines `f64`, a name the stub"),
            ("use std::collections::HashMap as Tensor;", "defines `Tensor`, a name"),
            ("struct Fake(u64);\ntype i64 = Fake;\nlet N: i64 = Fake(1000);", "defines `i64`, a name"),
            ("use core::primitive::f32 as f64;\nfn f(x: f64) -> f64 { x }", "defines `f64`, a name the stub"),
            ("mod nn { pub struct Sequential; }", "defines `nn`, a name"),
            // Found by a review: an alias or a qualified path hides the stub's type from the
            // owner's name (a trait method taking `self` then comes first)…
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake; }}\ntype B = Ema;\nimpl T for B {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `B`)"),
            (&format!("{EMA}\ntrait T {{ fn update(self) -> Fake; }}\nuse Ema as B;\nimpl T for B {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `B`)"),
            (&format!("{EMA}\ntrait Id {{ type T; }}\ntrait T {{ fn update(self) -> Fake; }}\nimpl T for <Ema as Id>::T {{ fn update(self) -> Fake {{ Fake }} }}"), "`fn update(self) -> Fake` (for `<Ema as Id>::T`)"),
            // …an inherent method whose bounds never hold leaves the call to a trait's…
            ("struct Ema { updates: u64, averages: Vec<Tensor> }\ntrait Ready { type Out; }\n\
              impl<T> Ema where Ema: Ready<Out = T> { fn new(m: f64) -> Ema { todo!() } fn update(&mut self) {} }",
             "`impl<T> Ema where Ema: Ready<Out = T> { fn update(&mut self) }` (for `Ema`) where the stub has `fn update(&mut self)`"),
            // …and an `impl` block's parameter, or an item out of the top level, names the
            // signature's words there.
            (&format!("{EMA}\nimpl<f64> Ema where Ema: Pick<Out = f64> {{ fn get(&self) -> f64 {{ todo!() }} }}"), "defines `f64`, a name"),
            ("struct Ema { updates: u64, averages: Vec<Tensor> }\nmod m { type f64 = super::Fake;\n  impl super::Ema { fn new(m: f64) -> super::Ema { todo!() } fn update(&mut self) {} } }", "defines `f64`, a name"),
            ("fn f(x: f64) -> f64 { x }\nfn g() { struct u64; }", "defines `u64`, a name"),
            ("fn f(x: f64) -> f64 { x }\nmod m { pub use super::Fake as i64; }", "defines `i64`, a name"),
        ] {
            let found = why(answer);
            assert!(found.iter().any(|w| w.contains(expect)), "{answer}: {found:?}");
        }
        // A stub that declares nothing: nothing to keep, even in a text that is not Rust.
        assert!(changed("fn f( {", &declarations("println!(\"hi\");").unwrap()).is_empty());
        // A syntax error whose brackets balance: the compiler says what is wrong.
        assert!(why("fn f(x: f64) -> f64 { x + }").is_empty());
    }

    /// A stub's `impl` block with parameters (homework 5's `impl<M: nn::Module>
    /// DenoisingScoreMatcher<M>`): an answer writes its header as the stub does, parameter
    /// names included; its methods apply only where its bounds hold.
    #[test]
    fn a_stubs_impl_header_is_kept() {
        let stub = "struct S<M: nn::Module> { m: M }\n\
                    impl<M: nn::Module> S<M> { fn loss(&self, x: &Tensor) -> Tensor { todo!() } }";
        let declared = declarations(stub).unwrap();
        let why = |answer: &str| changed(answer, &declared);
        // A helper named like the method is not a word of its signature.
        assert_eq!(
            why("struct S<M: nn::Module> { m: M, k: f64 }\n\
                 impl<M: nn::Module> S<M> { fn loss(&self, x: &Tensor) -> Tensor { loss(x) } }\n\
                 fn helper<M: nn::Module>(m: &M) {}\nfn loss(x: &Tensor) -> Tensor { x.shallow_clone() }"),
            Vec::<String>::new()
        );
        assert!(
            why("struct S<M: nn::Module> { m: M }\nmod nn { pub trait Module {} }")
                .iter()
                .any(|w| w.contains("defines `nn`"))
        );
        for (answer, expect) in [
            (
                "struct S<M: nn::Module> { m: M }\nimpl<M> S<M> where M: nn::Module { fn loss(&self, x: &Tensor) -> Tensor { todo!() } }",
                "`impl<M> S<M> where M: nn::Module { fn loss(&self, &Tensor) -> Tensor }` (for `S`) where the stub has `impl<M: nn::Module> S<M> { fn loss(&self, &Tensor) -> Tensor }`",
            ),
            (
                "struct S<M: nn::Module> { m: M }\nimpl<M: nn::Module + Ready> S<M> { fn loss(&self, x: &Tensor) -> Tensor { todo!() } }",
                "`impl<M: nn::Module + Ready> S<M> { fn loss(&self, &Tensor) -> Tensor }`",
            ),
        ] {
            let found = why(answer);
            assert!(found.iter().any(|w| w.contains(expect)), "{answer}: {found:?}");
        }
    }

    #[test]
    fn what_the_solution_declares_for_the_checks_comes_with_the_stubs() {
        let stub = "fn f(x: f64) -> f64 { todo!() }\ntodo!(\"your code here\")";
        let solution = "fn f(x: f64) -> f64 { 2.0 * x }\nstruct Own { k: f64 }\nimpl Own { fn get(&self) -> f64 { self.k } }\nfn scale() -> f64 { 2.0 }\nfn helper() {}";
        let names =
            |ds: Vec<super::Declaration>| ds.into_iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(
            names(
                declarations_for(stub, solution, &["value:scale".into(), "type:Own".into()])
                    .unwrap()
            ),
            [
                "field:Own.k",
                "method:Own::get",
                "type:Own",
                "value:f",
                "value:scale"
            ]
        );
        assert_eq!(
            names(declarations_for(stub, solution, &[]).unwrap()),
            ["value:f"]
        );
    }
}
