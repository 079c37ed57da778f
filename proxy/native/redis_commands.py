"""The commands the redis front serves, and how each one is routed.

The single-key set is twemproxy's (notes/redis.md) plus GETEX, GETDEL, LPOS, SMISMEMBER,
ZMSCORE and friends; each goes whole to the owner of its first key. Commands that name
several keys but cannot be split (SINTER, RPOPLPUSH, PFMERGE, ...) run only when every key
has the same owner, as EVAL does. Names are lower case.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    SINGLE = "single"  # the key is argument 1
    SAME_OWNER = "same-owner"  # every key on one backend, or an error
    SCRIPT = "script"  # EVAL/EVALSHA: numkeys at 2, keys after it; same owner
    MGET = "mget"
    MSET = "mset"
    COUNT = "count"  # DEL, UNLINK, EXISTS, TOUCH: the sum of the parts' integers
    LOCAL = "local"  # answered by the proxy


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    kind: Kind
    # Fewest arguments, the command name included (redis' arity, as a minimum).
    min_args: int
    # Stores data: under failover its first key (for MSET every key) gets the TTL cap
    # (docs/invariants.md, invariant 3).
    writes: bool = False
    # SAME_OWNER: the keys are args[first:last] (last None: to the end), every `step`-th,
    # or with `numkeys` the count at args[first - 1] gives how many follow.
    first: int = 1
    last: int | None = None
    step: int = 1
    numkeys: bool = False

    def keys(self, args: list[bytes]) -> list[bytes]:
        """The keys of a SAME_OWNER or SCRIPT command; ValueError if the count is bad."""
        if self.numkeys:
            count = int(args[self.first - 1])
            if count < 0 or self.first + count > len(args):
                raise ValueError("Number of keys can't be greater than number of args")
            return args[self.first : self.first + count]
        return args[self.first : self.last : self.step]


def _table(kind: Kind, min_args: int, names: str, writes: bool = False) -> list[Command]:
    return [Command(name, kind, min_args, writes) for name in names.split()]


_READS = """
get getrange getbit bitcount bitpos strlen substr ttl pttl type exists dump expiretime
hget hmget hgetall hkeys hvals hlen hexists hstrlen hscan hrandfield
lindex llen lrange lpos
scard sismember smismember smembers srandmember sscan
zcard zcount zlexcount zrange zrangebylex zrangebyscore zrank zrevrange zrevrangebylex
zrevrangebyscore zrevrank zscore zmscore zscan zrandmember
sort_ro
"""
_WRITES = """
set setnx setex psetex append incr incrby incrbyfloat decr decrby getset getex getdel
setbit setrange bitfield expire expireat pexpire pexpireat persist restore sort
hset hsetnx hmset hdel hincrby hincrbyfloat
lpush lpushx rpush rpushx lpop rpop linsert lrem lset ltrim
sadd srem spop
zadd zincrby zrem zremrangebylex zremrangebyrank zremrangebyscore zpopmin zpopmax
pfadd
"""

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in [
        *_table(Kind.SINGLE, 2, _READS),
        *_table(Kind.SINGLE, 2, _WRITES, writes=True),
        Command("mget", Kind.MGET, 2),
        Command("mset", Kind.MSET, 3, writes=True),
        *_table(Kind.COUNT, 2, "del unlink touch exists"),
        Command("eval", Kind.SCRIPT, 3, writes=True, first=3, numkeys=True),
        Command("evalsha", Kind.SCRIPT, 3, writes=True, first=3, numkeys=True),
        *_table(Kind.SAME_OWNER, 2, "sdiff sinter sunion pfcount"),
        *_table(Kind.SAME_OWNER, 3, "sdiffstore sinterstore sunionstore pfmerge", writes=True),
        Command("rpoplpush", Kind.SAME_OWNER, 3, writes=True, last=3),
        Command("lmove", Kind.SAME_OWNER, 5, writes=True, last=3),
        Command("smove", Kind.SAME_OWNER, 4, writes=True, last=3),
        Command("zinterstore", Kind.SAME_OWNER, 4, writes=True, first=3, numkeys=True),
        Command("zunionstore", Kind.SAME_OWNER, 4, writes=True, first=3, numkeys=True),
        Command("zdiffstore", Kind.SAME_OWNER, 4, writes=True, first=3, numkeys=True),
        *_table(Kind.LOCAL, 1, "ping quit command info hello"),
        *_table(Kind.LOCAL, 2, "echo select auth"),
    ]
}
