"""Records the commands a Django workload with django-cacheops sends, for
bench/bullmq/replay.py.

    python record.py <port> <operations> <out.jsonl>

Runs with the packages bench/cacheops/run.sh installs. Configures Django in-process (an
in-memory SQLite database, the small blog app next to this file, every query op of its
models cached by cacheops in the server on 127.0.0.1:<port>), loads a few hundred rows,
then runs <operations> requests of a blog: mostly reads (a post by pk, posts of a
category, published posts of a category, an author's post count, a post's category and
author, a category's posts by its slug, a post's top-level comments, a front page through
@cached_as), and one in five a write (a view counter saved, a post (un)published with
invalidated_update, a post or comment created, a comment deleted, a category renamed)
that makes cacheops invalidate. Every command redis-py sends is written in send order,
one JSON line each (connection, command name, base64 arguments); a first line maps each
script's SHA1 to its name (its file in cacheops/lua) and the body redis-py sends for it.
"""
import base64
import hashlib
import json
import os
import random
import sys

import redis
import redis.client

port, operations, out_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

# --- Recording: every command in the order redis-py sends it. cacheops talks to Redis only
# through Redis.execute_command (its scripts are redis-py Script objects, which call
# EVALSHA and SCRIPT LOAD through it); pipelines are recorded too, should a version use them.
commands = []  # (name, [arg bytes]) in send order
bodies = {}  # sha1 -> script body, from SCRIPT LOAD and EVAL


def words(encoder, args):
    # redis-py sends a first argument such as "SCRIPT LOAD" as two words.
    first = args[0].split() if isinstance(args[0], str) else [args[0]]
    return [encoder.encode(a) for a in (*first, *args[1:])]


def note(argv):
    name = argv[0].decode().lower()
    if name == "script" and argv[1].lower() == b"load":
        bodies[hashlib.sha1(argv[2]).hexdigest()] = argv[2]
    elif name == "eval":
        bodies[hashlib.sha1(argv[1]).hexdigest()] = argv[1]
    commands.append((name, argv[1:]))


original_execute = redis.client.Redis.execute_command


def execute_command(self, *args, **options):
    argv = words(self.get_encoder(), args)
    try:
        reply = original_execute(self, *args, **options)
    except redis.exceptions.NoScriptError:
        # The first EVALSHA of each script, before redis-py loads it. The replay loads every
        # script beforehand, so there it would run the script once more than cacheops did.
        raise
    except redis.exceptions.ResponseError:
        note(argv)
        raise
    note(argv)
    return reply


redis.client.Redis.execute_command = execute_command

original_pipeline_execute = redis.client.Pipeline.execute


def pipeline_execute(self, raise_on_error=True):
    stack = [words(self.get_encoder(), args) for args, _ in self.command_stack]
    if self.transaction and stack:
        stack = [[b"MULTI"], *stack, [b"EXEC"]]
    for argv in stack:
        note(argv)
    return original_pipeline_execute(self, raise_on_error)


redis.client.Pipeline.execute = pipeline_execute

# --- Django with cacheops, configured as a project's settings.py would.
import django  # noqa: E402
from django.conf import settings  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the blog app
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=["cacheops", "blog"],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    USE_TZ=True,
    CACHEOPS_REDIS={"host": "127.0.0.1", "port": port, "db": 0},
    CACHEOPS={"blog.*": {"ops": "all", "timeout": 60 * 15}},
)
django.setup()

from django.core.management import call_command  # noqa: E402
from cacheops import cached_as, no_invalidation  # noqa: E402
import cacheops.redis  # noqa: E402
from blog.models import Author, Category, Comment, Post  # noqa: E402

call_command("migrate", run_syncdb=True, verbosity=0)

rng = random.Random(7)
with no_invalidation:  # a data load: nothing is cached yet, so there is nothing to invalidate
    categories = Category.objects.bulk_create(
        Category(name="Category %d" % i, slug="category-%d" % i) for i in range(12))
    authors = Author.objects.bulk_create(
        Author(name="Author %d" % i, email="a%d@example.com" % i) for i in range(40))
    Post.objects.bulk_create(
        Post(title="Post %d" % i, body="Body of post %d. " % i * 20,
             category=rng.choice(categories), author=rng.choice(authors),
             published=rng.random() < 0.7, views=rng.randrange(1000))
        for i in range(400))
    posts = list(Post.objects.nocache().order_by("pk"))
    Comment.objects.bulk_create(
        Comment(post=rng.choice(posts), author=rng.choice(authors), text="Comment %d" % i)
        for i in range(600))
    comments = list(Comment.objects.nocache().order_by("pk"))
    replies = []
    for i in range(300):
        parent = rng.choice(comments)
        replies.append(Comment(post_id=parent.post_id, author=rng.choice(authors), parent=parent,
                               text="Reply %d" % i))
    Comment.objects.bulk_create(replies)

post_ids = list(Post.objects.nocache().values_list("pk", flat=True))
comment_ids = list(Comment.objects.nocache().values_list("pk", flat=True))


@cached_as(Post.objects.filter(published=True), timeout=60)
def front_page():
    return [(p.pk, p.title) for p in Post.objects.filter(published=True).order_by("-views")[:10]]


def popular_post_id():
    # Four reads in five go to the 40 most read posts, as on a real site: repeated queries
    # are what a cache is for, and they come back as GETs rather than cache_thing calls.
    return rng.choice(post_ids[:40] if rng.random() < 0.8 else post_ids)


def pick_post():
    return Post.objects.get(pk=popular_post_id())


def read():
    kind = rng.randrange(10)
    if kind == 0:
        pick_post()
    elif kind == 1:
        list(Post.objects.filter(category=rng.choice(categories)))
    elif kind == 2:
        list(Post.objects.filter(category=rng.choice(categories), published=True))
    elif kind == 3:
        Post.objects.filter(author=rng.choice(authors)).count()
    elif kind == 4:
        post = pick_post()
        post.category.name, post.author.name  # two cached .get()s through the foreign keys
    elif kind == 5:
        list(Post.objects.filter(category__slug="category-%d" % rng.randrange(12)))
    elif kind == 6:
        # A post's top-level comments: parent=None becomes parent_id IS NULL, and cacheops
        # sends that condition as a JSON null.
        list(Comment.objects.filter(post_id=popular_post_id(), parent=None))
    elif kind == 7:
        Comment.objects.filter(post_id=popular_post_id(), approved=True).count()
    elif kind == 8:
        list(Post.objects.filter(pk__in=rng.sample(post_ids, 3)))
    else:
        front_page()


def write():
    kind = rng.randrange(6)
    if kind == 0:
        post = pick_post()
        post.views += 1
        post.save()
    elif kind == 1:
        Post.objects.filter(pk=rng.choice(post_ids)).invalidated_update(
            published=rng.random() < 0.5)
    elif kind == 2:
        post = Post.objects.create(title="New post", body="New body", published=True,
                                   category=rng.choice(categories), author=rng.choice(authors))
        post_ids.append(post.pk)
    elif kind == 3:
        post_id = popular_post_id()
        parent = rng.choice([None, *Comment.objects.filter(post_id=post_id)[:3]])
        comment = Comment.objects.create(post_id=post_id, author=rng.choice(authors),
                                         parent=parent, text="A new comment")
        comment_ids.append(comment.pk)
    elif kind == 4:
        comment_id = comment_ids.pop(rng.randrange(len(comment_ids)))
        # Its replies go with it (on_delete=CASCADE), each one invalidated.
        Comment.objects.filter(pk=comment_id).delete()
        comment_ids[:] = list(Comment.objects.nocache().values_list("pk", flat=True))
    else:
        category = rng.choice(categories)
        category.name = "Category %d" % rng.randrange(1000)
        category.save()


for _ in range(operations):
    if rng.random() < 0.2:
        write()
    else:
        read()

# --- The recording. The scripts come from cacheops' own loader, which templates each file
# for the server's version (the REDIS_4/REDIS_7 blocks) into the body redis-py sends (a
# server that already had them would have seen no SCRIPT LOAD); any other script cacheops
# sent (its inline lock scripts) is named by its SHA1.
scripts = {}
lua_dir = os.path.join(os.path.dirname(cacheops.redis.__file__), "lua")
for filename in sorted(os.listdir(lua_dir)):
    name = filename[:-len(".lua")]
    body = cacheops.redis.load_script(name).script
    scripts[hashlib.sha1(body.encode()).hexdigest()] = {"name": name, "body": body}
for sha, body in bodies.items():
    scripts.setdefault(sha, {"name": "inline-" + sha[:8], "body": body.decode()})
for name, args in commands:
    if name in ("evalsha", "evalsha_ro") and args[0].decode() not in scripts:
        sys.exit("record.py: EVALSHA of a script never sent: %s" % args[0].decode())
with open(out_path, "w") as out:
    out.write(json.dumps({"scripts": scripts}) + "\n")
    for name, args in commands:
        out.write(json.dumps({"c": 0, "n": name,
                              "a": [base64.b64encode(a).decode() for a in args]}) + "\n")
calls = {}
for name, args in commands:
    if name in ("evalsha", "evalsha_ro", "eval"):
        sha = args[0].decode() if name != "eval" else hashlib.sha1(args[0]).hexdigest()
        calls[scripts[sha]["name"]] = calls.get(scripts[sha]["name"], 0) + 1
print("recorded %d operations: %d commands, script calls %s; %d posts, %d comments" % (
    operations, len(commands), json.dumps(calls, sort_keys=True),
    Post.objects.nocache().count(), Comment.objects.nocache().count()))
